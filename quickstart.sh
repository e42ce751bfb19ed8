#!/usr/bin/env bash
# One command from a fresh clone: install dbt-mxcp into .venv, build the example shop
# project with dbt (the dbt plugin writes target/mxcp_registry.json), validate its
# endpoints against the warehouse, call a tool, then serve the project over MCP
# (streamable HTTP on 127.0.0.1:8000, Ctrl-C to stop). `--no-serve` stops before serving.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/dbt-mxcp ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
fi
export PATH="$PWD/.venv/bin:$PATH" DBT_SEND_ANONYMOUS_USAGE_STATS=false
cd examples/shop
python scripts/generate_seeds.py
dbt build --profiles-dir .
dbt-mxcp list --profiles-dir .
dbt-mxcp validate --profiles-dir .
echo
echo '$ dbt-mxcp run tool search_customers --param query=ali --user '\''{"groups": ["support"]}'\'''
dbt-mxcp run tool search_customers --profiles-dir . --param query=ali --user '{"groups": ["support"]}'
[ "${1:-}" = "--no-serve" ] && exit 0
echo
echo "Claude Desktop config (claude_desktop_config.json) to use this project over stdio:"
dbt-mxcp serve --profiles-dir . --print-config claude
echo
echo "Serving over HTTP: connect the MCP Inspector or any client to http://127.0.0.1:${PORT:-8000}/mcp"
exec dbt-mxcp serve --profiles-dir . --transport http --port "${PORT:-8000}"
