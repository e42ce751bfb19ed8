"""Traces of real pipeline calls (the SDK's in-memory exporter), `/metrics` of a running server, JSON logs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dbt_mxcp.audit.auditor import Auditor
from dbt_mxcp.audit.jsonl import JsonlSink
from dbt_mxcp.errors import CallError
from dbt_mxcp.load import load
from dbt_mxcp.pipeline import Pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.settings import Settings
from dbt_mxcp.telemetry import from_settings
from dbt_mxcp.warehouse import open_warehouse
from tests.helpers import Project
from tests.integration.test_server import http_server_process

CANARY = "zq-canary-7c2d"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_call_is_traced_without_sql_or_arguments(it_project: Project, tmp_path: Path) -> None:
    path = str(it_project.path)
    loaded = load(Flags(project_dir=path, profiles_dir=path))
    exporter = InMemorySpanExporter()
    telemetry = from_settings(Settings.model_validate({"telemetry": {"traces": True, "metrics": True}}), exporter)
    warehouse = open_warehouse(loaded.require_warehouse())
    auditor = Auditor(JsonlSink(tmp_path / "audit.jsonl", fsync="os"), b"k" * 32)
    pipeline = Pipeline(loaded.registry, warehouse, auditor=auditor, telemetry=telemetry)
    try:
        outcome = pipeline.call_tool("search_people", {"name_query": "ann"}, {"role": "analyst"})
        with pytest.raises(CallError):
            pipeline.call_tool("salary_band", {"band_min": 0}, {"groups": []})
        pipeline.call_tool("get_person", {"id": 1})
        with pytest.raises(CallError):
            pipeline.call_tool("search_people", {"name_query": CANARY, "limit": 0})
    finally:
        auditor.close()
        warehouse.close()
        telemetry.close()
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name == "mxcp.call"]
    assert [(s.attributes or {}).get("mxcp.endpoint") for s in calls] == [
        "search_people", "salary_band", "get_person", "search_people"]
    first = calls[0]
    children = [s for s in spans if s.parent is not None and s.parent.span_id == first.context.span_id]
    assert [s.name for s in children] == ["mxcp.sql", "mxcp.policy.output", "mxcp.audit"]
    assert dict(first.attributes or {}) == {"mxcp.kind": "tool", "mxcp.endpoint": "search_people",
                                            "mxcp.transport": "cli", "mxcp.status": "ok",
                                            "mxcp.rows": outcome.row_count}
    sql = loaded.registry.get("tool", "search_people").sql  # type: ignore[union-attr]
    assert sql and dict(children[0].attributes or {}) == {
        "db.statement.hash": hashlib.sha256(sql.encode()).hexdigest()}
    denied = calls[1]
    assert (denied.attributes or {})["mxcp.status"] == "denied" and not denied.status.is_ok
    assert denied.status.description == "denied"  # the kind, never the message
    denied_children = [s.name for s in spans if s.parent is not None and s.parent.span_id == denied.context.span_id]
    assert denied_children == ["mxcp.policy.input", "mxcp.audit"]
    # Nothing exported carries SQL text or argument values.
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    assert CANARY not in exported and "ann" not in exported.replace("annotations", "")
    assert sql.strip()[:40] not in exported and "select" not in exported.lower()
    # Audit records carry the trace's id.
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["trace_id"] for r in records] == [format(s.context.trace_id, "032x") for s in calls]
    assert telemetry.metrics is not None and telemetry.metrics.calls[("tool", "search_people", "ok")] == 1


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.anyio
async def test_metrics_endpoint_and_json_logs(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"telemetry": {"metrics": True}}))
    with http_server_process(project, "--log-format", "json") as (base, proc):
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            for i in (1, 2, 3):
                assert not (await c.call_tool("get_person", {"id": i})).is_error
            assert (await c.call_tool("salary_band", {"band_min": 0})).is_error
            assert (await c.call_tool("get_person", {"id": "x"})).is_error
            assert not (await c.call_tool("search_people", {"name_query": CANARY})).is_error
            await c.read_resource("people://1")
        async with httpx2.AsyncClient() as http:
            reply = await http.get(f"{base}/metrics")
        proc.terminate()  # the PID we started; the logs are complete once it has exited
        _, stderr = proc.communicate(timeout=30)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(reply.text)
    calls = {k: v for k, v in samples.items() if k.startswith("mxcp_calls_total")}
    assert calls == {
        'mxcp_calls_total{kind="resource",endpoint="people://{id}",status="ok"}': 1,
        'mxcp_calls_total{kind="tool",endpoint="get_person",status="invalid_arguments"}': 1,
        'mxcp_calls_total{kind="tool",endpoint="get_person",status="ok"}': 3,
        'mxcp_calls_total{kind="tool",endpoint="salary_band",status="denied"}': 1,
        'mxcp_calls_total{kind="tool",endpoint="search_people",status="ok"}': 1,
    }
    assert {k: v for k, v in samples.items() if k.startswith("mxcp_denials_total")} == {
        'mxcp_denials_total{kind="tool",endpoint="salary_band"}': 1}
    assert samples['mxcp_rows_total{kind="tool",endpoint="get_person"}'] == 3
    assert samples['mxcp_call_duration_seconds_count{kind="tool",endpoint="get_person"}'] == 4
    assert samples['mxcp_call_duration_seconds_bucket{kind="tool",endpoint="get_person",le="+Inf"}'] == 4
    assert samples["mxcp_calls_in_flight"] == 0 and samples["mxcp_audit_write_failures_total"] == 0
    assert CANARY not in reply.text and "user" not in reply.text

    lines = [line for line in stderr.splitlines() if line.strip()]
    entries: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line is one JSON object
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(re.match(r"Serving \d+ endpoint\(s\)", e["message"]) for e in entries)
    assert CANARY not in stderr


@pytest.mark.anyio
async def test_metrics_are_off_by_default(it_project: Project) -> None:
    with http_server_process(it_project) as (base, _):
        async with httpx2.AsyncClient() as http:
            assert (await http.get(f"{base}/metrics")).status_code == 404
