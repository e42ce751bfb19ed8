"""`dbt-mxcp serve` with the official MCP SDK client, over stdio and HTTP, in both protocol eras."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters

from tests.helpers import BIN, REPO, Project, env, free_port, stop, wait_for_http

pytestmark = pytest.mark.anyio
MODES = ["legacy", "auto"]  # 2025-11-25 handshake; 2026-07-28 stateless (auto picks it)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _people() -> dict[int, dict[str, str]]:
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        return {int(r["id"]): r for r in csv.DictReader(fh)}


def _stdio(project: Project) -> StdioServerParameters:
    return StdioServerParameters(command=str(BIN / "dbt-mxcp"), env=env(),
                                 args=["serve", "--project-dir", str(project.path), "--profiles-dir",
                                       str(project.path)])


@contextmanager
def http_server(project: Project, *extra: str) -> Iterator[str]:
    """`dbt-mxcp serve --transport http` on a free 127.0.0.1 port; yields its base URL; stops it by PID."""
    with http_server_process(project, *extra) as (base, _):
        yield base


@contextmanager
def http_server_process(project: Project, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """As `http_server`, yielding the process too."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--transport", "http", "--port", str(port),
                             "--project-dir", str(project.path), "--profiles-dir", str(project.path),
                             "--poll-interval", "0.2", *extra],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", proc)
        yield base, proc
    finally:
        stop(proc)


@asynccontextmanager
async def client_for(project: Project, transport: str, mode: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        async with Client(_stdio(project), mode=mode) as c:  # type: ignore[arg-type]
            yield c
    else:
        with http_server(project) as base:
            async with Client(f"{base}/mcp", mode=mode) as c:  # type: ignore[arg-type]
                yield c


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("mode", MODES)
async def test_tools_resources_prompts(it_project: Project, transport: str, mode: str) -> None:
    listed = json.loads(it_project.mxcp("list", "--output", "json").stdout)
    enabled_tools = sorted(e["name"] for e in listed if e["kind"] == "tool" and e["enabled"])
    people = _people()
    async with client_for(it_project, transport, mode) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        # The disabled tool is never served; write tools only when writes are enabled (not here);
        # salary_band's input rule denies every caller outside 'hr', so an anonymous caller is not shown it.
        assert sorted(tools) == sorted(set(enabled_tools) - {"add_note", "delete_notes", "salary_band"})

        # The full input schema reaches the client: enum, format, examples, defaults, descriptions.
        search = tools["search_people"].input_schema
        assert search["properties"]["teams"]["items"]["enum"] == ["eng", "sales", "ops", "hr", "legal"]
        assert search["properties"]["limit"] == {"type": "integer", "description": "Most rows to return.",
                                                 "minimum": 1, "maximum": 100, "default": 10}
        assert search["properties"]["name_query"]["examples"] == ["ann"]
        assert search["required"] == ["name_query"] and search["additionalProperties"] is False
        since = tools["people_joined_since"].input_schema["properties"]["since"]
        assert since["format"] == "date"
        assert tools["get_person"].annotations is not None and tools["get_person"].annotations.read_only_hint

        result = await c.call_tool("get_person", {"id": 3})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["name"] == people[3]["name"]
        assert json.loads(result.content[0].text)["name"] == people[3]["name"]  # type: ignore[union-attr]

        result = await c.call_tool("count_people", {"team": "eng"})
        assert result.structured_content == {"result": sum(1 for p in people.values() if p["team"] == "eng")}

        bad = await c.call_tool("get_person", {"id": "three"})
        assert bad.is_error and "'id' must be of type integer" in bad.content[0].text  # type: ignore[union-attr]
        extra = await c.call_tool("get_person", {"id": 1, "sql": "drop table people"})
        assert extra.is_error and "unexpected field(s)" in extra.content[0].text  # type: ignore[union-attr]
        denied = await c.call_tool("salary_band", {"band_min": 0})
        assert denied.is_error and denied.content[0].text == "HR only"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="Unknown tool"):
            await c.call_tool("no_such_tool", {})

        templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
        assert templates == {"people://{id}"}
        assert {str(r.uri) for r in (await c.list_resources()).resources} == {"teams://all"}
        person = json.loads((await c.read_resource("people://2")).contents[0].text)  # type: ignore[union-attr]
        assert person["name"] == people[2]["name"] and "email" not in person  # filter_sensitive_fields
        with pytest.raises(MCPError, match="not found"):
            await c.read_resource("people://999")

        prompt = await c.get_prompt("team_brief", {"team": "ops"})
        assert [m.role for m in prompt.messages] == ["user", "user"]  # system is sent as user
        assert "the ops team" in prompt.messages[1].content.text  # type: ignore[union-attr]
        completion = await c.complete(ref={"type": "ref/prompt", "name": "team_brief"},
                                      argument={"name": "team", "value": "s"})
        assert completion.completion.values == ["sales"]


async def test_masked_and_truncated_results_match_the_output_schema(it_project: Project) -> None:
    # The SDK client validates structuredContent against outputSchema: a masked email ("****") and a
    # filtered field must still conform.
    async with Client(_stdio(it_project), mode="legacy") as c:  # type: ignore[arg-type]
        result = await c.call_tool("search_people", {"name_query": "ann"})
        assert not result.is_error
        assert {r["email"] for r in result.structured_content["result"]} == {"****"}  # type: ignore[index]


async def test_http_rejects_foreign_origin_and_host(it_project: Project) -> None:
    with http_server(it_project) as base:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx2.AsyncClient() as http:
            ok = await http.post(f"{base}/mcp", json=body, headers=headers)
            assert ok.status_code == 200
            evil = await http.post(f"{base}/mcp", json=body, headers={**headers, "Origin": "http://evil.example"})
            assert evil.status_code == 403
            rebound = await http.post(f"{base}/mcp", json=body, headers={**headers, "Host": "evil.example"})
            assert rebound.status_code in (403, 421)
            ready = (await http.get(f"{base}/readyz")).json()
            listed = json.loads(it_project.mxcp("list", "--output", "json").stdout)
            assert ready["status"] == "ready" and ready["endpoints"] == sum(1 for e in listed if e["enabled"])


async def test_malformed_requests_get_clean_errors(it_project: Project) -> None:
    with http_server(it_project) as base:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx2.AsyncClient() as http:
            garbage = await http.post(f"{base}/mcp", content=b"{not json", headers=headers)
            assert garbage.status_code == 400
            assert garbage.json()["error"]["code"] == -32700
            utf8 = await http.post(f"{base}/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}',
                                   headers=headers)
            assert utf8.status_code == 400
            # A 2025-11-25 session, then a tools/call whose argument nests 100,000 arrays deep.
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}}}
            opened = await http.post(f"{base}/mcp", json=init, headers=headers)
            session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"],
                       "MCP-Protocol-Version": "2025-11-25"}
            await http.post(f"{base}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                            headers=session)
            deep = b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "team_overview", ' \
                b'"arguments": {"teams": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}}"
            answer = await http.post(f"{base}/mcp", content=deep, headers=session)
            assert answer.status_code in (200, 400, 413)
            assert '"error"' in answer.text or '"isError":true' in answer.text.replace(" ", "")
            # The server keeps serving.
            assert (await http.get(f"{base}/healthz")).status_code == 200
            listed = await http.post(f"{base}/mcp", headers=session,
                                     json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
            assert listed.status_code == 200 and "get_person" in listed.text
            unknown = await http.post(f"{base}/mcp", headers=session,
                                      json={"jsonrpc": "2.0", "id": 4, "method": "no/such_method"})
            assert "-32601" in unknown.text


def test_stdio_survives_garbage_lines(it_project: Project) -> None:
    proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--project-dir", str(it_project.path),
                             "--profiles-dir", str(it_project.path)], env=env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    lines = [b"{not json\n", b"\xff\xfe garbage\n", b'{"jsonrpc": "2.0"}\n', json.dumps(init).encode() + b"\n"]
    out, err = proc.communicate(b"".join(lines), timeout=60)
    answers = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert any(a.get("id") == 1 and "result" in a for a in answers), (out, err)
    assert b"Traceback" not in err


def test_print_config_for_claude(it_project: Project) -> None:
    out = json.loads(it_project.mxcp("serve", "--print-config", "claude").stdout)
    server = out["mcpServers"]["dbt_mxcp_integration_tests"]
    assert server["command"].endswith("dbt-mxcp")
    assert server["args"][:3] == ["serve", "--project-dir", str(it_project.path)]
    http = json.loads(it_project.mxcp("serve", "--print-config", "http", "--port", "9123").stdout)
    assert http["mcpServers"]["dbt_mxcp_integration_tests"]["url"] == "http://127.0.0.1:9123/mcp"


async def test_source_file_edit_is_served_without_restart(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    sql = project.path / "endpoints" / "greet_person.sql"
    async with Client(_stdio(project), mode="legacy") as c:  # type: ignore[arg-type]
        first = await c.call_tool("greet_person", {"id": 1})
        assert first.structured_content == {"id": 1, "greeting": "hello, Ann!"}
        sql.write_text(sql.read_text().replace("', ' || name || '!'", "', ' || upper(name) || '!'"))
        got = None
        for _ in range(50):
            import anyio

            await anyio.sleep(0.2)
            got = (await c.call_tool("greet_person", {"id": 1})).structured_content
            if got != first.structured_content:
                break
        assert got == {"id": 1, "greeting": "hello, ANN!"}


async def test_broken_manifest_keeps_the_previous_endpoints(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            manifest = project.path / "target" / "manifest.json"
            manifest.write_text(manifest.read_text()[:1000])  # half-written, as dbt's in-place write can be
            import anyio

            await anyio.sleep(1.5)
            result = await c.call_tool("get_person", {"id": 1})
            assert not result.is_error and result.structured_content["name"] == "Ann"  # type: ignore[index]
        async with httpx2.AsyncClient() as http:
            ready = (await http.get(f"{base}/readyz")).json()
        assert ready["status"] == "ready" and "not valid JSON" in ready["reload_error"]


def _add_tool(project: Project, tool: dict[str, Any]) -> None:
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "team_stats")
    model["config"]["meta"]["mxcp"]["tools"].append(tool)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
