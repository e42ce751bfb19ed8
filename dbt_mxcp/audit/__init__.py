"""The audit log: one record per call (tools/call, resources/read, prompts/get), allowed, denied or
failed, written before the call is answered.

- `records`: what a record holds, with sensitive arguments replaced by a salted HMAC.
- `jsonl`: the default sink — an append-only, hash-chained, rotated JSONL file, mode 0600 — and
  reading and verifying it.
- `duckdb_sink`: a table in a DuckDB file one server process writes (readers work on a copy).
- `postgres`: a table several replicas share, one chain under an advisory lock.
- `auditor`: the strict rule: a call whose record cannot be written fails.
"""
