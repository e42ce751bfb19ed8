"""Serving while a plain `dbt run` rebuilds the warehouse: both succeed, and the new models and
endpoints are served without a restart."""

from __future__ import annotations

import csv
import subprocess
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest
import yaml
from mcp import Client, types

from tests.helpers import REPO, Project, run
from tests.integration.test_server import http_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _floors() -> list[int]:
    with (REPO / "integration_tests" / "seeds" / "teams.csv").open() as fh:
        return sorted({int(r["floor"]) for r in csv.DictReader(fh)})


def _add_model_with_tool(project: Project) -> None:
    (project.path / "models" / "floors.sql").write_text(
        "select distinct floor from {{ ref('teams') }} order by floor\n")
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    doc["models"].append({
        "name": "floors",
        "description": "Every floor that has a team.",
        "config": {"meta": {"mxcp": {"tools": [{"name": "list_floors", "description": "The floors.",
                                                "return": {"type": "array"}}]}}},
        "columns": [{"name": "floor", "data_type": "integer"}],
    })
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def test_dbt_run_while_serving(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    changes: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changes.append(message)

    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy", message_handler=on_message) as c:  # type: ignore[arg-type]
            calls, failures = 0, []
            stop_loop = anyio.Event()

            async def loop() -> None:
                nonlocal calls
                while not stop_loop.is_set():
                    result = await c.call_tool("get_person", {"id": 1})
                    calls += 1
                    if result.is_error or (result.structured_content or {}).get("name") != "Ann":
                        failures.append(result)

            def dbt_run() -> subprocess.CompletedProcess[str]:
                return run(["dbt", "run", "--profiles-dir", "."], project.path, check=False)

            async with anyio.create_task_group() as tg:
                tg.start_soon(loop)
                await anyio.sleep(0.5)
                first = await anyio.to_thread.run_sync(dbt_run)  # a plain dbt run, unaware of the server
                _add_model_with_tool(project)
                second = await anyio.to_thread.run_sync(dbt_run)
                deadline = time.monotonic() + 15
                names: set[str] = set()
                while time.monotonic() < deadline and "list_floors" not in names:
                    await anyio.sleep(0.2)
                    names = {t.name for t in (await c.list_tools()).tools}
                stop_loop.set()

            assert first.returncode == 0, first.stdout
            assert second.returncode == 0, second.stdout
            assert "list_floors" in names, "the new endpoint was not served after dbt run"
            floors = await c.call_tool("list_floors", {})
            assert floors.structured_content is not None
            assert sorted(r["floor"] for r in floors.structured_content["result"]) == _floors()
            assert not failures, f"{len(failures)} of {calls} calls failed during dbt run: {failures[:2]}"
            assert calls > 20
            assert changes, "no notifications/tools/list_changed reached the client"


async def test_schema_yml_edit_served_after_dbt_parse(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    path = project.path / "models" / "properties.yml"
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
            assert "team_by_name" not in {t.name for t in (await c.list_tools(cache_mode="refresh")).tools}
            doc = yaml.safe_load(path.read_text())
            model = next(m for m in doc["models"] if m["name"] == "team_stats")
            model["config"]["meta"]["mxcp"]["tools"].append({
                "name": "team_by_name", "description": "One team's stats.", "return": {"type": "object"},
                "parameters": [{"name": "team", "type": "string", "description": "The team."}]})
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            await anyio.to_thread.run_sync(lambda: project.dbt("parse"))
            started = time.monotonic()
            names: set[str] = set()
            while time.monotonic() - started < 10 and "team_by_name" not in names:
                await anyio.sleep(0.2)
                names = {t.name for t in (await c.list_tools(cache_mode="refresh")).tools}
            assert "team_by_name" in names
            result = await c.call_tool("team_by_name", {"team": "hr"})
            assert result.structured_content is not None and result.structured_content["floor"] == 2


def test_server_start_waits_for_a_writer_but_not_for_readers(fresh_it_project: Project) -> None:
    import duckdb

    project = fresh_it_project
    project.dbt("build")
    warehouse = str(project.path / "integration.duckdb")
    with duckdb.connect(warehouse, read_only=True), http_server(project):
        pass  # another reader of dbt's file does not keep the server from starting
    writer = duckdb.connect(warehouse)  # this test process now holds the write lock, as `dbt run` would
    releaser = threading.Timer(2.0, writer.close)
    releaser.start()
    started = time.monotonic()
    try:
        with http_server(project):
            waited = time.monotonic() - started
    finally:
        releaser.cancel()
        writer.close()
    assert waited >= 1.5  # it waited for the writer, then served


async def test_sighup_reloads_settings_under_a_client_loop(fresh_it_project: Project) -> None:
    import json
    import signal

    import httpx2

    from tests.integration.test_server import http_server_process

    project = fresh_it_project
    project.dbt("build")
    settings = project.path / "mxcp.yml"
    settings.write_text(yaml.safe_dump({"limits": {"max_rows": 5}}))
    everyone = len(list(csv.DictReader((REPO / "integration_tests" / "seeds" / "people.csv").open())))
    assert everyone > 5
    # A poll interval of an hour: only SIGHUP can make this server reload.
    with http_server_process(project, "--poll-interval", "3600") as (base, proc):
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            sizes: list[int] = []
            failures: list[str] = []
            stop = anyio.Event()

            async def loop() -> None:
                while not stop.is_set():
                    result = await c.call_tool("people_joined_since", {"since": "2000-01-01"})
                    if result.is_error:
                        failures.append(str(result.content))
                    else:
                        sizes.append(len(result.structured_content["result"]))  # type: ignore[index]

            async def until(size: int) -> None:
                with anyio.fail_after(20):
                    while not sizes or sizes[-1] != size:
                        await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(loop)
                await until(5)
                settings.write_text(yaml.safe_dump({"limits": {"max_rows": 2}}))
                await anyio.sleep(0.5)
                assert sizes[-1] == 5  # no reload without the signal
                proc.send_signal(signal.SIGHUP)
                await until(2)
                # A bad file keeps the old settings, and says why.
                settings.write_text(yaml.safe_dump({"limits": {"max_rows": -1}}))
                proc.send_signal(signal.SIGHUP)
                async with httpx2.AsyncClient() as http:
                    with anyio.fail_after(20):
                        while not (ready := (await http.get(f"{base}/readyz")).json())["reload_error"]:
                            await anyio.sleep(0.1)
                assert "limits.max_rows" in ready["reload_error"]
                calls = len(sizes)
                await anyio.sleep(0.5)
                stop.set()
            assert len(sizes) > calls and sizes[-1] == 2 and not failures, json.dumps(failures)
