#!/usr/bin/env bash
# The whole test suite from scratch: a fresh virtualenv, the package with its dev
# extras, then ruff, mypy and pytest (real `dbt build`s on DuckDB, MCP clients over
# stdio and HTTP, the Inspector CLI on node, and a throwaway PostgreSQL started here).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# The MCP Inspector test runs the official Inspector CLI on node (from the npm registry).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
VENV=$(mktemp -d /tmp/dbt-mxcp-tests.XXXXXX)
# A throwaway PostgreSQL (Debian's package) for the Postgres audit sink tests.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PG_BIN" ]; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
PGDATA=$(mktemp -d /tmp/dbt-mxcp-pg.XXXXXX)
PGPORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
as_pg "'$PG_BIN/initdb' -D '$PGDATA' -A trust -U postgres" >/dev/null
as_pg "'$PG_BIN/pg_ctl' -D '$PGDATA' -l '$PGDATA/server.log' -w -o \"-p $PGPORT -k $PGDATA -c listen_addresses=127.0.0.1\" start" >/dev/null
trap 'as_pg "\"$PG_BIN/pg_ctl\" -D \"$PGDATA\" -m fast stop" >/dev/null 2>&1; rm -rf "$VENV" "$PGDATA"' EXIT
export DBT_MXCP_TEST_PG_DSN="postgresql://postgres@127.0.0.1:$PGPORT/postgres"

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
export PATH="$VENV/bin:$PATH" DBT_SEND_ANONYMOUS_USAGE_STATS=false
echo "== ruff";  ruff check dbt_mxcp tests bench
echo "== mypy";  mypy
echo "== docs";  mkdocs build --strict --quiet  # the docs site, with its links and anchors checked
echo "== pytest"
set +e
pytest --durations=25 "$@"  # the slowest tests, to keep CI within its time limit
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
