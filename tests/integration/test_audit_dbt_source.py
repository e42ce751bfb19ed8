"""The audit log as a dbt relation (the package's macros/audit_log.sql and dbt_models/): real records
from each sink, read back by `dbt run` of the staging model `mxcp_audit_calls` — the JSONL and DuckDB
sinks on dbt-duckdb, the Postgres sink on dbt-postgres — and compared with `dbt-mxcp log`."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
import yaml
from mcp import Client

from tests.helpers import Project, run
from tests.integration.test_server import http_server

pytestmark = pytest.mark.anyio
ENABLED = {"dbt_mxcp_audit_enabled": True}
COLUMNS = ("called_at", "transport", "caller_id", "caller_email", "caller_role", "endpoint_kind", "endpoint_name",
           "endpoint_node", "status", "succeeded", "row_count", "affected_rows", "truncated", "duration_ms", "error",
           "arguments", "decisions", "hash")
HR = json.dumps({"id": "u1", "email": "ann@example.com", "role": "hr"})


def _vars(**values: Any) -> str:
    return json.dumps(values)


def _make_calls(project: Project) -> None:
    """A few audited calls of every kind, through `dbt-mxcp run` (answered, denied, redacted)."""
    project.mxcp("run", "tool", "get_person", "--param", "id=1", "--user", HR)
    assert project.mxcp("run", "tool", "salary_band", "--param", "band_min=0", check=False).returncode != 0
    project.mxcp("run", "tool", "search_people", "--param", "name_query=anna", "--user", HR)
    project.mxcp("run", "resource", "people://1")
    project.mxcp("run", "prompt", "team_brief", "--param", "team=hr")


def _records(project: Project) -> list[dict[str, Any]]:
    return list(json.loads(project.mxcp("log", "--output", "json").stdout))


def _expected(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The staging model's rows, by trace id, computed from the records in Python."""
    out = {}
    for r in records:
        called_at = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).replace(tzinfo=None)  # UTC
        out[r["trace_id"]] = (called_at, r["transport"], r["caller"]["id"], r["caller"]["email"], r["caller"]["role"],
                              r["endpoint"]["kind"], r["endpoint"]["name"], r["endpoint"]["node"], r["status"],
                              r["status"] == "ok", r["rows"], r["affected_rows"], r["truncated"], r["duration_ms"],
                              r["error"], r["arguments"], r["decisions"], r["hash"])
    return out


def _by_trace(rows: list[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """Rows of (trace_id, *COLUMNS), JSON text (DuckDB) parsed like jsonb (psycopg)."""
    parsed = [tuple(json.loads(v) if isinstance(v, str) and i in (16, 17) else v for i, v in enumerate(row))
              for row in rows]
    return {row[0]: row[1:] for row in parsed}


def _duckdb_rows(project: Project) -> dict[str, tuple[Any, ...]]:
    with duckdb.connect(str(project.path / "integration.duckdb"), read_only=True) as con:
        return _by_trace(con.execute(f"select trace_id, {', '.join(COLUMNS)} from mxcp_audit_calls").fetchall())


def _listed(project: Project, *args: str) -> list[str]:
    out = project.dbt("ls", "--output", "name", "--quiet", *args).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_jsonl_sink_on_duckdb(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    # Rotate after every record or so: the model reads the rotated files too.
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"max_bytes": 1000, "backups": 20}}))
    _make_calls(project)
    assert (project.path / "logs" / "mxcp_audit.jsonl.1").exists()
    records = _records(project)
    assert len(records) == 5

    # Off by default: dbt does not even list the model, and `dbt build` made no table.
    assert _listed(project, "--select", "mxcp_audit_calls") == []
    with duckdb.connect(str(project.path / "integration.duckdb"), read_only=True) as con:
        assert not con.execute("select * from information_schema.tables "
                               "where table_name = 'mxcp_audit_calls'").fetchall()
    assert "mxcp_audit_calls" in _listed(project, "--select", "mxcp_audit_calls", "--vars", _vars(**ENABLED))

    project.dbt("run", "--select", "mxcp_audit_calls", "--vars", _vars(**ENABLED))
    rows = _duckdb_rows(project)
    assert rows == _expected(records)
    assert str(rows[records[2]["trace_id"]][15]["name_query"]).startswith("hmac-sha256:")  # as recorded
    assert rows[records[1]["trace_id"]][8:10] == ("denied", False)


async def test_duckdb_sink_on_duckdb(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"sink": "duckdb"}}))
    _make_calls(project)
    live = project.path / "logs" / "mxcp_audit.duckdb"
    sink_vars = {**ENABLED, "dbt_mxcp_audit_sink": "duckdb"}
    assert _listed(project, "--select", "mxcp_audit_calls") == []

    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 2})).is_error
        records = _records(project)  # dbt-mxcp log reads a private copy while the server writes
        assert len(records) == 6 and records[-1]["transport"] == "http"

        # The server holds the file read-write; DuckDB refuses dbt's read-only attach at once.
        refused = project.dbt("run", "--select", "mxcp_audit_calls", "--vars", _vars(**sink_vars), check=False)
        assert refused.returncode != 0 and "Could not set lock" in refused.stdout

        # The documented way while it runs: copy the file and its WAL under the sink's own lock.
        copy = project.path / "logs" / "audit_copy"
        copy.mkdir()
        run(["flock", "-s", f"{live}.lock", "sh", "-c", f'cp "{live}"* "{copy}/"'], project.path)
        project.dbt("run", "--select", "mxcp_audit_calls",
                    "--vars", _vars(**sink_vars, dbt_mxcp_audit_path=str(copy / live.name)))
        assert _duckdb_rows(project) == _expected(records)

    # With the server stopped, dbt reads the live file; it lets go of it when it exits.
    project.dbt("run", "--select", "mxcp_audit_calls", "--vars", _vars(**sink_vars))
    assert _duckdb_rows(project) == _expected(records)
    project.mxcp("run", "tool", "get_person", "--param", "id=3")  # the file is free to write again
    assert len(_records(project)) == 7


def _postgres_project(path: Path, dsn: str, schema: str) -> Project:
    """A dbt-postgres project with only the dbt_mxcp package, writing into `schema`."""
    url = urlsplit(dsn)
    path.mkdir()
    (path / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "audit_reader", "version": "1.0.0", "config-version": 2, "profile": "audit_reader"}))
    package = "{{ env_var('DBT_MXCP_PACKAGE_PATH') }}"  # the repository root (tests.helpers.env)
    (path / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": package}]}))
    (path / "profiles.yml").write_text(yaml.safe_dump({"audit_reader": {"target": "pg", "outputs": {"pg": {
        "type": "postgres", "host": url.hostname, "port": url.port or 5432, "user": url.username or "postgres",
        "password": url.password or "", "dbname": url.path.lstrip("/") or "postgres", "schema": schema,
        "threads": 1}}}}))
    project = Project(path)
    project.dbt("deps")
    return project


def test_postgres_sink_on_dbt_postgres(fresh_it_project: Project, dsn: str, tmp_path: Path) -> None:
    import psycopg

    project = fresh_it_project
    project.dbt("build")
    suffix = uuid.uuid4().hex[:8]
    table, schema = f"audit_{suffix}", f"dbt_{suffix}"
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {
        "sink": "postgres", "postgres_dsn": dsn, "table": table}}))
    try:
        _make_calls(project)
        records = _records(project)
        assert len(records) == 5

        reader = _postgres_project(tmp_path / "reader", dsn, schema)
        # No var: neither the source nor the model exists; the postgres sink var declares the source.
        assert _listed(reader) == []
        sink_vars = {"dbt_mxcp_audit_sink": "postgres", "dbt_mxcp_audit_table": table}
        assert _listed(reader, "--vars", _vars(**sink_vars)) == ["dbt_mxcp.mxcp_audit"]
        assert sorted(_listed(reader, "--vars", _vars(**sink_vars, **ENABLED))) == [
            "dbt_mxcp.mxcp_audit", "mxcp_audit_calls"]

        reader.dbt("run", "--vars", _vars(**sink_vars, **ENABLED))
        with psycopg.connect(dsn) as con:
            rows = con.execute(f"select trace_id, {', '.join(COLUMNS)} from {schema}.mxcp_audit_calls").fetchall()
            types = dict(con.execute("select column_name, data_type from information_schema.columns "
                                     "where table_schema = %s and table_name = 'mxcp_audit_calls'", (schema,)))
        assert _by_trace(rows) == _expected(records)
        assert types["called_at"] == "timestamp without time zone" and types["arguments"] == "jsonb"
    finally:
        with psycopg.connect(dsn, autocommit=True) as con:
            con.execute(f"drop schema if exists {schema} cascade")
            con.execute(f"drop table if exists {table}")


def test_exposure_puts_the_server_downstream_of_the_models(fresh_it_project: Project) -> None:
    # The documented exposure pattern (docs/endpoints.md): lineage from the served models to the server.
    upstream = _listed(fresh_it_project, "--select", "+exposure:mcp_server", "--resource-type", "model",
                       "--resource-type", "seed", "--resource-type", "snapshot", "--resource-type", "source")
    assert {"people_enriched", "team_stats", "people_in_team", "people", "teams", "people_snapshot",
            "raw.raw_events"} <= set(upstream)
