"""A served project's metrics and traces, pushed by OTLP/HTTP to a stand-in collector on 127.0.0.1."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from dbt_mxcp.auth.api_keys import hash_key
from dbt_mxcp.telemetry import BUCKETS
from tests.helpers import Project
from tests.integration.test_auth import client_with
from tests.integration.test_server import http_server_process

CANARY = "zq-canary-5e1b"  # an argument value that must never be exported
CALLER_ID, CALLER_NAME = "u-canary-88f3", "Canary Caller"  # who calls, never to be exported either
CALLER = {"id": CALLER_ID, "name": CALLER_NAME, "role": "staff", "groups": ["staff"]}
KEY = "mxcp_otlp_4c9d2e"

Attrs = frozenset[tuple[str, Any]]
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StandInCollector:
    """A stand-in OTLP/HTTP collector: keeps the decoded bodies POSTed to /v1/metrics and /v1/traces."""

    def __init__(self) -> None:
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.bodies: list[bytes] = []  # raw, for the privacy checks
        self.content_types: set[str] = set()
        self._lock = threading.Lock()  # the server answers each request in its own thread
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                reply: bytes
                with collector._lock:
                    collector.bodies.append(body)
                    collector.content_types.add(self.headers.get("Content-Type", ""))
                    if self.path == "/v1/metrics":
                        collector.metrics.append(ExportMetricsServiceRequest.FromString(body))
                        reply = ExportMetricsServiceResponse().SerializeToString()
                    elif self.path == "/v1/traces":
                        collector.traces.append(ExportTraceServiceRequest.FromString(body))
                        reply = ExportTraceServiceResponse().SerializeToString()
                    else:
                        self.send_error(404)
                        return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, as `telemetry.otlp_endpoint` takes it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInCollector:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


def _attrs(attributes: Iterable[KeyValue]) -> Attrs:
    return frozenset((kv.key, _value(kv.value)) for kv in attributes)


def _final(requests: list[ExportMetricsServiceRequest]) -> dict[str, dict[Attrs, Any]]:
    """Each metric's final value by attributes: a sum's value, or a histogram's (count, buckets, bounds).

    Cumulative points (the default) are totals, so the latest counts; delta ones (if the environment
    asks for them) are added up.
    """
    final: dict[str, dict[Attrs, Any]] = {}
    for request in requests:  # in the order they arrived, so a later cumulative point replaces an earlier one
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    values = final.setdefault(metric.name, {})
                    if metric.WhichOneof("data") == "sum":
                        delta = metric.sum.aggregation_temporality == DELTA
                        for point in metric.sum.data_points:
                            key = _attrs(point.attributes)
                            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                            values[key] = value + values.get(key, 0) if delta else value
                    else:
                        delta = metric.histogram.aggregation_temporality == DELTA
                        for h in metric.histogram.data_points:
                            key = _attrs(h.attributes)
                            count, buckets = h.count, tuple(h.bucket_counts)
                            if delta and key in values:
                                count += values[key][0]
                                buckets = tuple(a + b for a, b in zip(values[key][1], buckets, strict=True))
                            values[key] = (count, buckets, tuple(h.explicit_bounds))
    return final


def _key(**values: str) -> Attrs:
    return frozenset(values.items())


PLAN: list[tuple[str, dict[str, Any], str]] = [  # (tool, arguments, the status the server should record)
    ("get_person", {"id": 1}, "ok"),
    ("get_person", {"id": 2}, "ok"),
    ("get_person", {"id": 3}, "ok"),
    ("salary_band", {"band_min": 0}, "denied"),  # HR only; the caller is staff
    ("get_person", {"id": "x"}, "invalid_arguments"),
    ("search_people", {"name_query": CANARY}, "ok"),
]


@pytest.mark.anyio
async def test_a_served_project_pushes_metrics_and_traces_to_a_collector(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    with StandInCollector() as collector:
        settings = {
            "telemetry": {"otlp_metrics": True, "otlp_metrics_interval": 0.2, "traces": True,
                          "otlp_endpoint": collector.url, "service_name": "it-mcp"},
            "auth": {"type": "api_key", "api_keys": [{"name": "otlp-bot", "sha256": hash_key(KEY), "user": CALLER}]},
        }
        (project.path / "mxcp.yml").write_text(yaml.safe_dump(settings))
        with http_server_process(project) as (base, proc):
            async with client_with(base, {"X-API-Key": KEY}) as c:
                for tool, arguments, status in PLAN:
                    assert (await c.call_tool(tool, arguments)).is_error == (status != "ok"), tool
                await c.read_resource("people://1")
            # The exporters' last push is at shutdown, so no waiting for an interval to pass.
            proc.terminate()  # the PID we started
            _, stderr = proc.communicate(timeout=60)
    assert "Failed to export" not in stderr and "Exception while exporting" not in stderr, stderr
    assert collector.metrics and collector.traces
    assert collector.content_types == {"application/x-protobuf"}

    # Metrics: the call counts, denials, rows, latency histogram and in-flight gauge of the plan.
    services = {_attrs(r.resource.attributes).issuperset({("service.name", "it-mcp")})
                for request in collector.metrics for r in request.resource_metrics}
    assert services == {True}
    expected_calls = Counter(_key(kind="tool", endpoint=tool, status=status) for tool, _, status in PLAN)
    expected_calls[_key(kind="resource", endpoint="people://{id}", status="ok")] += 1
    final = _final(collector.metrics)
    assert final["mxcp.calls"] == dict(expected_calls)
    assert final["mxcp.denials"] == {_key(kind="tool", endpoint="salary_band"): 1}
    assert final["mxcp.rows"][_key(kind="tool", endpoint="get_person")] == 3  # one row for each answered id
    count, buckets, bounds = final["mxcp.call.duration"][_key(kind="tool", endpoint="get_person")]
    assert count == 4 and sum(buckets) == 4 and bounds == BUCKETS
    assert final["mxcp.calls.in_flight"] == {frozenset(): 0}

    # Traces: one mxcp.call span for each call, with its final status.
    spans = [span for request in collector.traces for r in request.resource_spans
             for scope in r.scope_spans for span in scope.spans]
    calls = [dict(_attrs(s.attributes)) for s in spans if s.name == "mxcp.call"]
    assert Counter((a["mxcp.kind"], a["mxcp.endpoint"], a["mxcp.status"]) for a in calls) == Counter(
        {(dict(k)["kind"], dict(k)["endpoint"], dict(k)["status"]): n for k, n in expected_calls.items()})
    assert {a["mxcp.transport"] for a in calls} == {"http"}
    assert all(set(dict(_attrs(s.attributes))) == {"db.statement.hash"} for s in spans if s.name == "mxcp.sql")

    # Nothing exported carries SQL text, argument values or who called.
    exported = b"".join(collector.bodies)
    for secret in (CANARY, CALLER_ID, CALLER_NAME, KEY, "ilike", "select"):
        assert secret.encode() not in exported, secret
    assert b"SELECT" not in exported.upper()
