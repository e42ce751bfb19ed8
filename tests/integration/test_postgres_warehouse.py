"""A dbt-postgres warehouse on a real PostgreSQL (started by run-tests.sh): examples/portable built on
DuckDB and on PostgreSQL answers the same; parameters are bound; the serving connection is read-only
and has a deadline; HTTP replicas serve beside `dbt run` and share the Postgres audit sink."""

from __future__ import annotations

import csv
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import yaml
from mcp import Client

from dbt_mxcp.engine import Limits, run_query
from dbt_mxcp.errors import CallError
from dbt_mxcp.load import Loaded, load
from dbt_mxcp.pipeline import open_pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.warehouse import open_warehouse
from tests.helpers import BIN, REPO, Project, copy_project, env, free_port
from tests.integration.test_server import http_server

PG_TARGET = ("--target", "pg", "--target-path", "target_pg")
SEEDS = REPO / "examples" / "portable" / "seeds"


def _pg_profile(dsn: str, schema: str, **overrides: Any) -> dict[str, Any]:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {"type": "postgres", "host": info.get("host", "127.0.0.1"), "port": int(info.get("port", 5432)),
            "user": info.get("user", "postgres"), "password": info.get("password", ""),
            "dbname": info.get("dbname", "postgres"), "schema": schema, "threads": 1, **overrides}


@pytest.fixture(scope="module")
def portable(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """examples/portable built twice: on DuckDB (target dev, target/) and on PostgreSQL (target pg, target_pg/)."""
    project = Project(copy_project(REPO / "examples" / "portable", tmp_path_factory.mktemp("pg") / "portable"))
    schema = f"portable_{uuid.uuid4().hex[:8]}"
    profiles = yaml.safe_load((project.path / "profiles.yml").read_text())
    profiles["portable"]["outputs"]["pg"] = _pg_profile(dsn, schema)
    (project.path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    project.dbt("build")
    project.dbt("build", *PG_TARGET)
    yield project
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{schema}" cascade')


def _loaded(project: Project, *pg: str) -> Loaded:
    target, target_path = (pg[1], pg[3]) if pg else (None, None)
    return load(Flags(project_dir=str(project.path), profiles_dir=str(project.path), target=target,
                      target_path=str(project.path / target_path) if target_path else None))


def _seed(name: str) -> list[dict[str, str]]:
    with (SEEDS / f"{name}.csv").open() as fh:
        return list(csv.DictReader(fh))


def _expected_totals() -> dict[int, dict[str, Any]]:
    orders = [o for o in _seed("orders") if o["status"] == "paid"]
    out = {}
    for c in _seed("customers"):
        mine = [o for o in orders if int(o["customer_id"]) == int(c["id"])]
        out[int(c["id"])] = {
            "customer_id": int(c["id"]), "name": c["name"], "country": c["country"], "paid_orders": len(mine),
            "paid_total": sum((Decimal(o["amount"]) for o in mine), Decimal("0.00")),
            "first_order": min(o["ordered_at"] for o in mine)[:10] if mine else None}
    return out


def _calls(loaded: Loaded) -> dict[str, Any]:
    """The same calls, made through the whole pipeline, keyed for comparison."""
    out: dict[str, Any] = {}
    with open_pipeline(loaded, lock_wait=10, writes=False, audit=False) as pipeline:
        for customer_id in range(1, 25):
            out[f"total {customer_id}"] = pipeline.call_tool("customer_total", {"customer_id": customer_id}).value
        out["find an"] = pipeline.call_tool("find_customers", {"text": "AN"}).value
        out["feb paid"] = pipeline.call_tool(
            "orders_between", {"start": "2025-02-01", "stop": "2025-03-01", "status": "paid", "max_orders": 500}).value
        out["feb any"] = pipeline.call_tool("orders_between", {"start": "2025-02-01", "stop": "2025-02-08"}).value
        out["resource"] = pipeline.read_resource("customers://7/total").value
    return out


def test_same_endpoints_same_answers_on_duckdb_and_postgres(portable: Project) -> None:
    on_duckdb, on_postgres = _calls(_loaded(portable)), _calls(_loaded(portable, *PG_TARGET))
    assert on_postgres == on_duckdb
    # ... and both are right, by the seeds read here with csv and Decimal.
    totals = _expected_totals()
    for customer_id, expected in totals.items():
        assert on_postgres[f"total {customer_id}"] == expected
    by_spend = sorted(totals.values(), key=lambda t: (-t["paid_total"], t["customer_id"]))
    assert on_postgres["find an"] == [{k: t[k] for k in ("customer_id", "name", "paid_total")}
                                      for t in by_spend if "an" in t["name"].lower()]
    orders = sorted(_seed("orders"), key=lambda o: (o["ordered_at"], int(o["id"])))
    feb = [o for o in orders if "2025-02-01" <= o["ordered_at"] < "2025-03-01" and o["status"] == "paid"]
    assert [(r["id"], r["amount"], r["ordered_at"]) for r in on_postgres["feb paid"]] == [
        (int(o["id"]), Decimal(o["amount"]), o["ordered_at"].replace(" ", "T")) for o in feb]
    week = [o for o in orders if "2025-02-01" <= o["ordered_at"] < "2025-02-08"]
    assert [r["id"] for r in on_postgres["feb any"]] == [int(o["id"]) for o in week]
    assert on_postgres["resource"] == [{"customer_id": 7, "paid_total": totals[7]["paid_total"]}]


# No LIKE wildcards (% _) in these: they would match as wildcards, which is LIKE, not injection.
@pytest.mark.parametrize("text", ["' or '1'='1", "x'; drop table customers; --", "an' --", "$1", "\\'; select 1; --"])
def test_parameters_are_bound_not_spliced(portable: Project, text: str) -> None:
    with open_pipeline(_loaded(portable, *PG_TARGET), lock_wait=10, writes=False, audit=False) as pipeline:
        found = pipeline.call_tool("find_customers", {"text": text}).value
        assert sorted(r["name"] for r in found) == sorted(
            c["name"] for c in _seed("customers") if text.lower() in c["name"].lower())
        # The table is still there.
        assert pipeline.call_tool("customer_total", {"customer_id": 1}).value["customer_id"] == 1


@pytest.fixture
def pg_warehouse(portable: Project) -> Iterator[Any]:
    warehouse = open_warehouse(_loaded(portable, *PG_TARGET).require_warehouse())
    yield warehouse
    warehouse.close()


@pytest.mark.parametrize("sql", [
    "create table mxcp_should_not_exist (a int)",
    "delete from customers",
    "update customers set name = 'x'",
    "create temporary table mxcp_should_not_exist as select 1 as a",
])
def test_serving_connection_is_read_only(pg_warehouse: Any, dsn: str, sql: str) -> None:
    cursor = pg_warehouse.cursor()
    try:
        with pytest.raises(CallError) as info:
            run_query(cursor, sql, {}, Limits())
    finally:
        cursor.close()
    assert info.value.kind == "execution"
    assert "read-only transaction" in str(info.value)
    with psycopg.connect(dsn) as conn:
        schema = pg_warehouse.config.schema
        assert conn.execute("select count(*) from information_schema.tables where table_name = "
                            "'mxcp_should_not_exist'").fetchone()[0] == 0
        assert conn.execute(f'select count(*) from "{schema}".customers').fetchone()[0] == len(_seed("customers"))
        assert conn.execute(f'select count(distinct name) from "{schema}".customers').fetchone()[0] > 1


def test_deadline_cancels_the_statement_on_the_server(pg_warehouse: Any, dsn: str) -> None:
    cursor = pg_warehouse.cursor()
    started = time.monotonic()
    try:
        # The server enforces the same limit: statement_timeout is set for the call.
        timeout = run_query(cursor, "select current_setting('statement_timeout') as t", {}, Limits(timeout=0.7))
        assert timeout.rows == [{"t": "700ms"}]
        with pytest.raises(CallError) as info:
            run_query(cursor, "select pg_sleep(30)", {}, Limits(timeout=0.7))
    finally:
        cursor.close()
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 10
    with psycopg.connect(dsn) as conn:
        running = conn.execute("select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' "
                               "and state = 'active' and pid != pg_backend_pid()").fetchone()[0]
    assert running == 0


def test_validate_checks_columns_in_postgres(portable: Project, dsn: str) -> None:
    assert "all OK" in portable.mxcp("validate", *PG_TARGET).stdout
    schema = _loaded(portable, *PG_TARGET).require_warehouse().schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'alter table "{schema}".customer_totals rename column paid_total to total_paid')
    try:
        bad = portable.mxcp("validate", *PG_TARGET, check=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'alter table "{schema}".customer_totals rename column total_paid to paid_total')
    assert bad.returncode != 0
    assert "customer_total" in bad.stdout + bad.stderr and "paid_total" in bad.stdout + bad.stderr


def test_manifest_of_another_target_is_refused(portable: Project) -> None:
    # target/ holds the DuckDB build: serving it against Postgres would query the wrong relations.
    wrong = portable.mxcp("run", "tool", "customer_total", "--param", "customer_id=1", "--target", "pg", check=False)
    assert wrong.returncode != 0
    assert "written for target 'dev', not 'pg'" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_unreachable_postgres_names_the_target_not_the_password(portable: Project, dsn: str,
                                                                tmp_path: Path) -> None:
    profiles = yaml.safe_load((portable.path / "profiles.yml").read_text())
    profiles["portable"]["outputs"]["pg"] = _pg_profile(dsn, "nowhere", port=free_port(), password="s3cret-pw-42")
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    proc = subprocess.run([str(BIN / "dbt-mxcp"), "validate", "--project-dir", str(portable.path), "--profiles-dir",
                           str(tmp_path), *PG_TARGET], env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "cannot connect to the PostgreSQL warehouse of target 'pg'" in out
    assert "s3cret-pw-42" not in out and "Traceback" not in out


@pytest.mark.anyio
async def test_replicas_serve_beside_dbt_run_and_share_the_audit_log(portable: Project, dsn: str) -> None:
    table = f"audit_{uuid.uuid4().hex[:8]}"
    (portable.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {
        "sink": "postgres", "postgres_dsn": dsn, "table": table}}))
    expected = {k: json.loads(json.dumps(v, default=float)) for k, v in _expected_totals().items()}
    results: dict[str, list[bool]] = {"a": [], "b": []}
    try:
        with http_server(portable, *PG_TARGET) as first, http_server(portable, *PG_TARGET) as second:
            async def calls(base: str, name: str, done: anyio.Event) -> None:
                async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
                    i = 0
                    while not done.is_set() or i < 20:
                        customer_id = 1 + i % 24
                        result = await c.call_tool("customer_total", {"customer_id": customer_id})
                        got = result.structured_content
                        results[name].append(not result.is_error and got == expected[customer_id])
                        i += 1

            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(calls, first, "a", done)
                tg.start_soon(calls, second, "b", done)
                # dbt rebuilds the served relations while both replicas answer.
                rebuilt = await anyio.to_thread.run_sync(
                    lambda: portable.dbt("run", *PG_TARGET, check=False))
                done.set()
        assert rebuilt.returncode == 0, rebuilt.stdout
        assert all(results["a"]) and all(results["b"]), "a call failed or answered wrong while dbt ran"
        total = len(results["a"]) + len(results["b"])
        records = json.loads(portable.mxcp("log", "--output", "json", *PG_TARGET).stdout)
        assert len(records) == total and {r["status"] for r in records} == {"ok"}
        assert f"{total} records, hash chain intact" in portable.mxcp("log", "--verify", *PG_TARGET).stdout
    finally:
        (portable.path / "mxcp.yml").unlink()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'drop table if exists "{table}"')
