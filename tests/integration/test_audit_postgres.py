"""The Postgres audit sink on a real PostgreSQL (started by run-tests.sh): two server replicas share
one table and one hash chain; an unreachable database fails calls closed."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest
import yaml
from mcp import Client

from tests.helpers import Project, free_port
from tests.integration.test_server import http_server

pytestmark = pytest.mark.anyio


async def test_replicas_share_one_chain(fresh_it_project: Project, dsn: str) -> None:
    project = fresh_it_project
    project.dbt("build")
    table = f"audit_{uuid.uuid4().hex[:8]}"
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {
        "sink": "postgres", "postgres_dsn": dsn, "table": table}}))
    counts = {"a": 0, "b": 0}

    async def calls(base: str, name: str) -> None:
        async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
            for i in range(25):
                result = await c.call_tool("get_person", {"id": 1 + i % 12})
                counts[name] += not result.is_error

    with http_server(project) as first, http_server(project) as second:
        async with anyio.create_task_group() as tg:
            tg.start_soon(calls, first, "a")
            tg.start_soon(calls, second, "b")
    assert counts == {"a": 25, "b": 25}
    records = json.loads(project.mxcp("log", "--output", "json").stdout)
    assert len(records) == 50 and {r["status"] for r in records} == {"ok"}
    verified = project.mxcp("log", "--verify")
    assert "50 records, hash chain intact" in verified.stdout


async def test_unreachable_database_fails_calls_closed(fresh_it_project: Project, dsn: str) -> None:
    project = fresh_it_project
    project.dbt("build")
    dead = f"postgresql://postgres:pw-canary-3f9@127.0.0.1:{free_port()}/postgres"
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"sink": "postgres", "postgres_dsn": dead}}))
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            result = await c.call_tool("get_person", {"id": 1})
    assert result.is_error and "audit record could not be written" in result.content[0].text  # type: ignore[union-attr]
    assert "pw-canary-3f9" not in result.content[0].text  # type: ignore[union-attr]
