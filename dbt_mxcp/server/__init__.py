"""Serving a dbt project over MCP.

- `snapshot`: publishes a read-only copy of the warehouse once dbt has finished with it, so the
  server never holds dbt's file and `dbt run` never fails on the server's lock.
- `live`: the served state (registry + pipeline + snapshot), swapped atomically on reload.
- `adapter`: the only module that speaks MCP (the SDK's low-level server).
- `transports`: stdio and streamable HTTP.
"""
