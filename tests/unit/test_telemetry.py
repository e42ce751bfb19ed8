"""The metrics registry's exposition text, OTLP instruments, label escaping, JSON log lines and the settings."""

from __future__ import annotations

import bisect
import json
import logging
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)

from dbt_mxcp.errors import CallError, ConfigError
from dbt_mxcp.settings import Settings
from dbt_mxcp.telemetry import (
    BUCKETS,
    DENIALS,
    JsonFormatter,
    Metrics,
    Telemetry,
    escape_label,
    from_settings,
    make_meter,
)


def _bucket_lines(labels: str, counts: list[int], total: int) -> list[str]:
    bounds = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0"]
    return [f'mxcp_call_duration_seconds_bucket{{{labels},le="{b}"}} {n}' for b, n in zip(bounds, counts, strict=True)
            ] + [f'mxcp_call_duration_seconds_bucket{{{labels},le="+Inf"}} {total}']


def test_render_exact_text_for_a_known_sequence() -> None:
    m = Metrics()
    for _ in range(4):
        m.started()
    m.finished("tool", "get_person", "ok", 0.002, 1)
    m.finished("tool", "get_person", "ok", 0.5, 2)
    m.finished("tool", "salary_band", "denied", 0.0005, 0)
    m.finished("resource", "people://{id}", "policy_error", 20.0, 0)
    m.started()  # one still running
    tool = 'kind="tool",endpoint="get_person"'
    band = 'kind="tool",endpoint="salary_band"'
    res = 'kind="resource",endpoint="people://{id}"'
    expected = [
        "# HELP mxcp_calls_total Calls answered, by endpoint and final status.",
        "# TYPE mxcp_calls_total counter",
        f'mxcp_calls_total{{{res},status="policy_error"}} 1',
        f'mxcp_calls_total{{{tool},status="ok"}} 2',
        f'mxcp_calls_total{{{band},status="denied"}} 1',
        "# HELP mxcp_denials_total Calls refused by a policy (status denied or policy_error).",
        "# TYPE mxcp_denials_total counter",
        f"mxcp_denials_total{{{res}}} 1",
        f"mxcp_denials_total{{{band}}} 1",
        "# HELP mxcp_rows_total Rows returned by calls.",
        "# TYPE mxcp_rows_total counter",
        f"mxcp_rows_total{{{res}}} 0",
        f"mxcp_rows_total{{{tool}}} 3",
        f"mxcp_rows_total{{{band}}} 0",
        "# HELP mxcp_call_duration_seconds How long calls took, audit write included.",
        "# TYPE mxcp_call_duration_seconds histogram",
        *_bucket_lines(res, [0] * 13, 1),
        f"mxcp_call_duration_seconds_sum{{{res}}} 20",
        f"mxcp_call_duration_seconds_count{{{res}}} 1",
        *_bucket_lines(tool, [0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], 2),
        f"mxcp_call_duration_seconds_sum{{{tool}}} 0.502",
        f"mxcp_call_duration_seconds_count{{{tool}}} 2",
        *_bucket_lines(band, [1] * 13, 1),
        f"mxcp_call_duration_seconds_sum{{{band}}} 0.0005",
        f"mxcp_call_duration_seconds_count{{{band}}} 1",
        "# HELP mxcp_calls_in_flight Calls running now.",
        "# TYPE mxcp_calls_in_flight gauge",
        "mxcp_calls_in_flight 1",
        "# HELP mxcp_audit_write_failures_total Audit records that could not be written.",
        "# TYPE mxcp_audit_write_failures_total counter",
        "mxcp_audit_write_failures_total 3",
    ]
    assert m.render(audit_write_failures=3) == "\n".join(expected) + "\n"


def test_empty_registry_has_headers_and_a_zero_gauge() -> None:
    text = Metrics().render()
    assert text.endswith("# TYPE mxcp_calls_in_flight gauge\nmxcp_calls_in_flight 0\n")
    assert "mxcp_audit_write_failures_total" not in text  # no auditor, no line


def test_label_values_are_escaped() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    m = Metrics()
    m.started()
    m.finished("resource", 'odd"name\\\n', "ok", 0.0, 0)
    assert 'mxcp_calls_total{kind="resource",endpoint="odd\\"name\\\\\\n",status="ok"} 1' in m.render()


def test_observe_counts_statuses_and_sets_a_trace_id() -> None:
    telemetry = Telemetry(Metrics())
    with telemetry.observe("tool", "t", "http") as observed:
        observed.rows = 5
    assert len(observed.trace_id) == 32
    with pytest.raises(CallError), telemetry.observe("tool", "t", "http"):
        raise CallError("denied", "no")
    with pytest.raises(ZeroDivisionError), telemetry.observe("tool", "t", "http"):
        _ = 1 / 0
    assert telemetry.metrics is not None
    assert telemetry.metrics.calls == {("tool", "t", "ok"): 1, ("tool", "t", "denied"): 1,
                                       ("tool", "t", "internal_error"): 1}
    assert telemetry.metrics.denials == {("tool", "t"): 1}
    assert telemetry.metrics.rows == {("tool", "t"): 5}
    assert telemetry.metrics.in_flight == 0


def test_json_log_lines_carry_the_calls_trace_id() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("dbt_mxcp.server", logging.INFO, __file__, 1, "serving %d", (3,), None)
    outside = json.loads(formatter.format(record))
    assert outside["message"] == "serving 3" and outside["level"] == "info" and "trace_id" not in outside
    assert set(outside) == {"time", "level", "logger", "message"}
    with Telemetry().observe("tool", "t", "stdio") as observed:
        inside = json.loads(formatter.format(record))
    assert inside["trace_id"] == observed.trace_id


def test_settings_default_off() -> None:
    telemetry = from_settings(Settings())
    assert telemetry.metrics is None and telemetry.tracer is None
    assert from_settings(Settings.model_validate({"telemetry": {"metrics": True}})).metrics is not None
    with pytest.raises(ValueError):
        Settings.model_validate({"telemetry": {"metric": True}})  # unknown keys are errors


def test_traces_without_the_otel_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(ConfigError, match="otel"):
        from_settings(Settings.model_validate({"telemetry": {"traces": True}}))


# -- OTLP metrics --------------------------------------------------------------------------------

Attrs = frozenset[tuple[str, Any]]


def _by_name(data: MetricsData | None) -> dict[str, Any]:
    """Each metric of a collection by name (one resource, one scope: ours)."""
    assert data is not None
    [resource] = data.resource_metrics
    [scope] = resource.scope_metrics
    assert scope.scope.name == "dbt_mxcp"
    return {m.name: m for m in scope.metrics}


def _points(metric: Any) -> dict[Attrs, Any]:
    return {frozenset(dict(p.attributes or {}).items()): p for p in metric.data.data_points}


def _values(metric: Any) -> dict[Attrs, float]:
    points = _points(metric)
    assert all(isinstance(p, NumberDataPoint) for p in points.values())
    return {k: p.value for k, p in points.items()}


def _attrs(**values: str) -> Attrs:
    return frozenset(values.items())


SEQUENCE = [  # (kind, endpoint, status, seconds, rows), as the Prometheus test above
    ("tool", "get_person", "ok", 0.002, 1),
    ("tool", "get_person", "ok", 0.5, 2),
    ("tool", "get_person", "invalid_arguments", 0.001, 0),  # on a bound: the bucket it bounds, as `le`
    ("tool", "salary_band", "denied", 0.0005, 0),
    ("resource", "people://{id}", "policy_error", 20.0, 0),  # past the last bound
    ("prompt", "summary", "ok", 0.03, 0),
]


def test_otlp_instruments_for_a_known_sequence() -> None:
    reader = InMemoryMetricReader()
    otel = make_meter("shop-mcp", reader)
    for _ in SEQUENCE:
        otel.started()
    for call in SEQUENCE:
        otel.finished(*call)
    otel.started()  # one still running
    data = reader.get_metrics_data()
    assert data is not None
    [resource] = data.resource_metrics
    assert resource.resource.attributes["service.name"] == "shop-mcp"
    metrics = _by_name(data)
    assert {n: (m.unit, type(m.data).__name__) for n, m in metrics.items()} == {
        "mxcp.calls": ("{call}", "Sum"), "mxcp.denials": ("{call}", "Sum"), "mxcp.rows": ("{row}", "Sum"),
        "mxcp.call.duration": ("s", "Histogram"), "mxcp.calls.in_flight": ("{call}", "Sum")}
    assert not metrics["mxcp.calls.in_flight"].data.is_monotonic and metrics["mxcp.calls"].data.is_monotonic

    calls = Counter(_attrs(kind=k, endpoint=e, status=s) for k, e, s, _, _ in SEQUENCE)
    denials = Counter(_attrs(kind=k, endpoint=e) for k, e, s, _, _ in SEQUENCE if s in DENIALS)
    rows: Counter[Attrs] = Counter()
    for k, e, _, _, n in SEQUENCE:
        rows[_attrs(kind=k, endpoint=e)] += n
    assert _values(metrics["mxcp.calls"]) == dict(calls)
    assert _values(metrics["mxcp.denials"]) == dict(denials)
    assert _values(metrics["mxcp.rows"]) == dict(rows)  # zero-row endpoints too, as /metrics shows them
    assert _values(metrics["mxcp.calls.in_flight"]) == {frozenset(): 1}

    durations: dict[Attrs, list[float]] = {}
    for k, e, _, seconds, _ in SEQUENCE:
        durations.setdefault(_attrs(kind=k, endpoint=e), []).append(seconds)
    histograms = _points(metrics["mxcp.call.duration"])
    assert set(histograms) == set(durations)
    for key, seconds_list in durations.items():
        point = histograms[key]
        assert isinstance(point, HistogramDataPoint)
        expected = [0] * (len(BUCKETS) + 1)  # (previous bound, bound], and one past the last
        for seconds in seconds_list:
            expected[bisect.bisect_left(BUCKETS, seconds)] += 1
        assert tuple(point.explicit_bounds) == BUCKETS
        assert list(point.bucket_counts) == expected
        assert point.count == len(seconds_list) and point.sum == pytest.approx(sum(seconds_list))
        assert (point.min, point.max) == (min(seconds_list), max(seconds_list))
    otel.close()


def test_observe_feeds_prometheus_and_otlp_the_same_measurements() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(Metrics(), otel_metrics=make_meter("dbt-mxcp", reader))
    with telemetry.observe("tool", "t", "http") as observed:
        observed.rows = 5
    with pytest.raises(CallError), telemetry.observe("tool", "t", "http"):
        raise CallError("policy_error", "boom")
    with pytest.raises(ZeroDivisionError), telemetry.observe("tool", "u", "stdio"):
        _ = 1 / 0
    metrics = _by_name(reader.get_metrics_data())
    registry = telemetry.metrics
    assert registry is not None
    assert _values(metrics["mxcp.calls"]) == {
        _attrs(kind=k, endpoint=e, status=s): n for (k, e, s), n in registry.calls.items()}
    assert _values(metrics["mxcp.denials"]) == {_attrs(kind=k, endpoint=e): n for (k, e), n in registry.denials.items()}
    assert _values(metrics["mxcp.rows"]) == {_attrs(kind=k, endpoint=e): n for (k, e), n in registry.rows.items()}
    assert _values(metrics["mxcp.calls.in_flight"]) == {frozenset(): registry.in_flight} == {frozenset(): 0}
    histograms = _points(metrics["mxcp.call.duration"])
    for (kind, endpoint), h in registry.durations.items():
        point = histograms[_attrs(kind=kind, endpoint=endpoint)]
        assert (point.count, point.sum) == (h.count, h.total)  # the very same durations
        assert list(point.bucket_counts[:-1]) == h.counts  # /metrics has no past-the-last bucket of its own
    telemetry.close()


class _KeepingExporter(MetricExporter):
    """A push exporter that keeps what it is given (the SDK has an in-memory reader, not exporter)."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_otlp_metrics_settings() -> None:
    assert from_settings(Settings()).otel_metrics is None
    reader = InMemoryMetricReader()
    settings = Settings.model_validate({"telemetry": {"otlp_metrics": True, "otlp_metrics_interval": 5}})
    telemetry = from_settings(settings, metric_reader=reader)
    assert telemetry.otel_metrics is not None and telemetry.metrics is None and telemetry.tracer is None
    with telemetry.observe("tool", "t", "cli"):
        pass
    assert _values(_by_name(reader.get_metrics_data())["mxcp.calls"]) == {
        _attrs(kind="tool", endpoint="t", status="ok"): 1}
    telemetry.close()
    with pytest.raises(ValueError):
        Settings.model_validate({"telemetry": {"otlp_metrics_interval": 0}})


def test_otlp_export_goes_to_the_endpoint_and_close_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http import metric_exporter
    from opentelemetry.sdk.metrics import export

    seen: dict[str, Any] = {}
    exporters: list[_KeepingExporter] = []

    class Recording(_KeepingExporter):
        def __init__(self, endpoint: str | None = None) -> None:
            super().__init__()
            seen["endpoint"] = endpoint
            exporters.append(self)

    def reader(exporter: MetricExporter, export_interval_millis: float | None = None) -> PeriodicExportingMetricReader:
        seen["interval"] = export_interval_millis
        return PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval_millis)

    monkeypatch.setattr(metric_exporter, "OTLPMetricExporter", Recording)  # the wiring, not the network
    monkeypatch.setattr(export, "PeriodicExportingMetricReader", reader)
    # An hour: within this test only the shutdown can export.
    cfg = {"otlp_metrics": True, "otlp_metrics_interval": 3600, "otlp_endpoint": "http://collector:4318/"}
    telemetry = from_settings(Settings.model_validate({"telemetry": cfg}))
    assert seen == {"endpoint": "http://collector:4318/v1/metrics", "interval": 3_600_000}
    with telemetry.observe("tool", "t", "http") as observed:
        observed.rows = 2
    [exporter] = exporters
    assert exporter.exported == []
    telemetry.close()
    telemetry.close()  # a second close is harmless
    [data] = exporter.exported
    metrics = _by_name(data)
    assert _values(metrics["mxcp.calls"]) == {_attrs(kind="tool", endpoint="t", status="ok"): 1}
    assert _values(metrics["mxcp.rows"]) == {_attrs(kind="tool", endpoint="t"): 2}
    assert metrics["mxcp.calls"].data.aggregation_temporality == AggregationTemporality.CUMULATIVE

    # Unset, the endpoint and interval are left to the exporter's and reader's OTEL_* variables.
    from_settings(Settings.model_validate({"telemetry": {"otlp_metrics": True}})).close()
    assert seen == {"endpoint": None, "interval": None}


def test_otlp_metrics_without_the_otel_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.metrics", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"otlp_metrics.*dbt-mxcp\[otel\]"):
        from_settings(Settings.model_validate({"telemetry": {"otlp_metrics": True, "traces": True}}))


def test_telemetry_off_imports_no_opentelemetry() -> None:
    # Off costs nothing: the SDK is not even loaded, and a call only checks a few attributes.
    code = """
import sys
from dbt_mxcp.settings import Settings
from dbt_mxcp.telemetry import from_settings
telemetry = from_settings(Settings())
with telemetry.observe("tool", "t", "http"):
    pass
telemetry.close()
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
