#!/usr/bin/env bash
# The whole test suite from scratch: a fresh virtualenv, the package with its dev
# extras, then ruff, mypy and pytest (which runs real `dbt build`s on DuckDB).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# The MCP Inspector test runs the official Inspector CLI on node (from the npm registry).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
VENV=$(mktemp -d /tmp/dbt-mxcp-tests.XXXXXX)
trap 'rm -rf "$VENV"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
export PATH="$VENV/bin:$PATH" DBT_SEND_ANONYMOUS_USAGE_STATS=false
echo "== ruff";  ruff check dbt_mxcp tests bench
echo "== mypy";  mypy
echo "== pytest"
set +e
pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
