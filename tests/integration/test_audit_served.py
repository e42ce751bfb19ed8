"""The audit log of a running server: every call recorded before it is answered, secrets never
written, fail-closed when the log cannot be written, nothing acknowledged lost on SIGKILL."""

from __future__ import annotations

import json
import signal

import anyio
import duckdb
import httpx2
import pytest
import yaml
from mcp import Client

from tests.helpers import Project
from tests.integration.test_server import http_server, http_server_process

pytestmark = pytest.mark.anyio
CANARY = "zq-canary-5f1e"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _log(project: Project, *args: str) -> list[dict[str, object]]:
    return list(json.loads(project.mxcp("log", "--output", "json", *args).stdout))


async def test_every_call_is_recorded_and_secrets_are_not(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 1})).is_error
            assert (await c.call_tool("salary_band", {"band_min": 0})).is_error
            assert (await c.call_tool("get_person", {"id": "x"})).is_error
            assert not (await c.call_tool("search_people", {"name_query": CANARY})).is_error  # sensitive
            assert (await c.call_tool("search_people", {"name_query": CANARY, "limit": 0})).is_error
            await c.read_resource("people://1")
            await c.get_prompt("team_brief", {"team": "hr"})
    records = _log(project)
    assert [(r["endpoint"]["name"], r["status"]) for r in records] == [  # type: ignore[index]
        ("get_person", "ok"), ("salary_band", "denied"), ("get_person", "invalid_arguments"),
        ("search_people", "ok"), ("search_people", "invalid_arguments"), ("people://{id}", "ok"),
        ("team_brief", "ok")]
    assert {r["transport"] for r in records} == {"http"}
    assert records[0]["rows"] == 1 and records[1]["decisions"] == [  # type: ignore[index]
        {"phase": "input", "index": 0, "action": "deny", "matched": True, "error": None}]
    assert str(records[3]["arguments"]["name_query"]).startswith("hmac-sha256:")  # type: ignore[index]
    assert records[3]["arguments"]["name_query"] == records[4]["arguments"]["name_query"]  # type: ignore[index]
    logs = b"".join(p.read_bytes() for p in (project.path / "logs").iterdir())
    assert CANARY.encode() not in logs
    assert [r["status"] for r in _log(project, "--status", "denied")] == ["denied"]
    assert [r["endpoint"]["name"] for r in _log(project, "--decision", "deny")] == ["salary_band"]  # type: ignore[index]
    assert "hash chain intact" in project.mxcp("log", "--verify").stdout
    assert all("result" not in r for r in records)  # result data only when asked for

    # Teams model the audit log in dbt: the package's model reads it through dbt_mxcp.audit_log().
    project.dbt("run", "--select", "mxcp_audit_calls", "--vars", "{dbt_mxcp_audit_enabled: true}")
    with duckdb.connect(str(project.path / "integration.duckdb"), read_only=True) as con:
        rows = con.execute("select endpoint_name, status from mxcp_audit_calls order by called_at").fetchall()
    assert rows == [(r["endpoint"]["name"], r["status"]) for r in records]  # type: ignore[index]

    # audit.results: true records what the caller got, its sensitive fields as HMAC.
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"results": True}}))
    shown = project.call("tool", "search_people", "name_query=anna", user={"role": "admin"})
    recorded = _log(project)[-1]["result"]
    assert [r["id"] for r in recorded] == [r["id"] for r in shown] and shown  # type: ignore[union-attr,index]
    assert all(str(r["email"]).startswith("hmac-sha256:") for r in recorded)  # type: ignore[index]
    assert all(r["name"] == s["name"] for r, s in zip(recorded, shown, strict=True))  # type: ignore[index]


@pytest.mark.parametrize("sink", ["jsonl", "duckdb"])
async def test_calls_fail_closed_when_the_audit_log_cannot_be_written(fresh_it_project: Project, sink: str) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "blocker").write_text("a file where the audit folder should be")
    audit = {"sink": sink, "path": f"blocker/audit.{sink}", "hmac_key": "a key from the environment"}
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": audit}))
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            result = await c.call_tool("get_person", {"id": 1})
            assert result.is_error
            assert "audit record could not be written" in result.content[0].text  # type: ignore[union-attr]
            assert "Ann" not in result.content[0].text  # type: ignore[union-attr]
        async with httpx2.AsyncClient() as http:
            ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "audit_failing"
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {**audit, "strict": False}}))
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 1})).is_error  # best effort: answered


async def test_sigkill_under_load_loses_no_acknowledged_call(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    acknowledged = 0
    with http_server_process(project) as (base, proc):

        async def caller() -> None:
            nonlocal acknowledged
            async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
                while True:
                    result = await c.call_tool("get_person", {"id": 2})
                    if not result.is_error:
                        acknowledged += 1

        with pytest.raises(BaseException):  # noqa: B017 - the clients die with the server
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(caller)
                await anyio.sleep(2)
                proc.send_signal(signal.SIGKILL)
                await anyio.sleep(2)
                tg.cancel_scope.cancel()
    assert acknowledged > 50
    ok = [r for r in _log(project, "--endpoint", "get_person") if r["status"] == "ok"]
    assert len(ok) >= acknowledged  # every answered call has its record (records are written first)
    assert "hash chain intact" in project.mxcp("log", "--verify").stdout
