"""Served calls beyond plain SQL reads: Python endpoints, progress, cancellation, deadlines, graceful
shutdown, oversized input, and write endpoints whose data dbt then reads as a source."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from decimal import Decimal
from typing import Any

import anyio
import duckdb
import pytest
import yaml
from mcp import Client, MCPError

from tests.helpers import REPO, Project
from tests.integration.test_server import _stdio, http_server, http_server_process

pytestmark = pytest.mark.anyio

WRITES = {"writes": {"enabled": True, "init_sql": (
    "create sequence if not exists note_ids; create table if not exists notes (note_id integer default "
    "nextval('note_ids') primary key, person_id integer not null, body varchar not null)")}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _people() -> list[dict[str, str]]:
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_python_endpoints_and_progress(it_project: Project, mode: str) -> None:
    eng = [Decimal(p["salary"]) for p in _people() if p["team"] == "eng"]
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with Client(_stdio(it_project), mode=mode) as c:  # type: ignore[arg-type]
        result = await c.call_tool("team_summary", {"team": "eng"})
        assert not result.is_error, result.content
        assert result.structured_content == {"team": "eng", "headcount": len(eng), "lowest": float(min(eng)),
                                             "highest": float(max(eng)), "asked_by": "anonymous"}
        waited = await c.call_tool("wait_a_while", {"seconds": 0.5}, progress_callback=on_progress)
        assert waited.structured_content == {"result": 0.5}
        assert progress and progress == sorted(progress)  # progress reached the client, increasing
        bad = await c.call_tool("wait_a_while", {"seconds": 99})
        assert bad.is_error and "'seconds' must be <= 30" in bad.content[0].text  # type: ignore[union-attr]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def test_cancellation_interrupts_the_query(it_project: Project) -> None:
    with http_server_process(it_project) as (base, proc):
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            with pytest.raises(MCPError):  # the client gives up after 1 s and cancels the request
                await c.call_tool("slow_count", {}, read_timeout_seconds=1.0)
            await anyio.sleep(0.5)
            # An interrupted query stops burning CPU; an abandoned one would keep a core busy.
            before = _cpu_seconds(proc.pid)
            await anyio.sleep(2)
            assert _cpu_seconds(proc.pid) - before < 0.5
            assert not (await c.call_tool("get_person", {"id": 1})).is_error


async def test_deadline_from_settings(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"limits": {"timeout": 0.5}}))
    async with Client(_stdio(project), mode="legacy") as c:  # type: ignore[arg-type]
        started = time.monotonic()
        result = await c.call_tool("slow_count", {})
        assert result.is_error and "0.5 s deadline" in result.content[0].text  # type: ignore[union-attr]
        assert time.monotonic() - started < 10


async def test_sigterm_lets_in_flight_calls_finish(it_project: Project) -> None:
    with http_server_process(it_project) as (base, proc):
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            results: list[Any] = []
            running = anyio.Event()

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                running.set()

            async def slow_call() -> None:
                results.append(await c.call_tool("wait_a_while", {"seconds": 2}, progress_callback=on_progress))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                with anyio.fail_after(30):
                    await running.wait()  # the call is in flight (a fixed sleep raced a loaded machine)
                proc.send_signal(signal.SIGTERM)
        assert results and results[0].structured_content == {"result": 2}
        assert proc.wait(timeout=30) == 0


async def test_oversized_and_deeply_nested_arguments(it_project: Project) -> None:
    async with Client(_stdio(it_project), mode="legacy") as c:  # type: ignore[arg-type]
        huge = await c.call_tool("search_people", {"name_query": "x" * 2_000_000})
        assert huge.is_error and "max_length" in huge.content[0].text  # type: ignore[union-attr]
        nested: Any = "eng"
        for _ in range(60):
            nested = [nested]
        deep = await c.call_tool("team_overview", {"teams": nested})
        assert deep.is_error and "'teams.0'" in deep.content[0].text  # type: ignore[union-attr]
        assert not (await c.call_tool("get_person", {"id": 1})).is_error  # still serving


async def test_write_tools_are_hidden_and_refused_while_writes_are_off(it_project: Project) -> None:
    async with Client(_stdio(it_project), mode="legacy") as c:  # type: ignore[arg-type]
        names = {t.name for t in (await c.list_tools()).tools}
        assert "add_note" not in names
        refused = await c.call_tool("add_note", {"person_id": 1, "body": "x"})
        assert refused.is_error and "writes are disabled" in refused.content[0].text  # type: ignore[union-attr]


async def test_write_endpoints_and_dbt_reading_their_data(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump(WRITES))
    warehouse = project.path / "integration.duckdb"
    before = warehouse.read_bytes()
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
            tools = {t.name: t for t in (await c.list_tools()).tools}
            hints = tools["add_note"].annotations
            assert hints is not None and hints.destructive_hint and not hints.read_only_hint
            first = await c.call_tool("add_note", {"person_id": 2, "body": "likes DuckDB"})
            assert first.structured_content == {"note_id": 1, "person_id": 2, "body": "likes DuckDB"}
            await c.call_tool("add_note", {"person_id": 2, "body": "and dbt"})
            await c.call_tool("add_note", {"person_id": 3, "body": "on leave"})
            too_long = await c.call_tool("add_note", {"person_id": 2, "body": "x" * 501})
            assert too_long.is_error
            deleted = await c.call_tool("delete_notes", {"person_id": 3})
            assert deleted.structured_content == {"result": [{"Count": 1}]}
            failing = await c.call_tool("add_note", {"person_id": 2, "body": None})
            assert failing.is_error
        await anyio.sleep(1.5)  # the publisher copies the writes database every second
    assert warehouse.read_bytes() == before  # dbt's warehouse was never written by the server

    published = project.path / "target" / "mxcp_writes_published.duckdb"
    with duckdb.connect(str(published), read_only=True) as con:
        rows = con.execute("select person_id, body from notes order by note_id").fetchall()
    assert rows == [(2, "likes DuckDB"), (2, "and dbt")]

    # dbt reads the published copy as a source, through a read-only attach in its profile.
    profiles = yaml.safe_load((project.path / "profiles.yml").read_text())
    dev = profiles["integration_tests"]["outputs"]["dev"]
    dev["attach"] = [{"path": str(published), "alias": "mxcp_writes", "read_only": True}]
    (project.path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    (project.path / "models" / "mxcp_writes.yml").write_text(yaml.safe_dump({"version": 2, "sources": [
        {"name": "mxcp_writes", "database": "mxcp_writes", "schema": "main", "tables": [{"name": "notes"}]}]}))
    (project.path / "models" / "notes_per_person.sql").write_text(
        "{{ config(materialized='table') }}\n"
        "select person_id, count(*) as notes from {{ source('mxcp_writes', 'notes') }} group by person_id\n")
    project.dbt("run", "--select", "notes_per_person")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select person_id, notes from notes_per_person").fetchall() == [(2, 2)]


def test_write_tool_from_the_cli(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump(WRITES))
    added = json.loads(project.mxcp("run", "tool", "add_note", "--param", "person_id=5", "--param",
                                    "body=hello").stdout)
    assert added == {"note_id": 1, "person_id": 5, "body": "hello"}
    assert "Validated" in project.mxcp("validate").stdout
