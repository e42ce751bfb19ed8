"""The metrics registry's exposition text, label escaping, JSON log lines and the telemetry settings."""

from __future__ import annotations

import json
import logging

import pytest

from dbt_mxcp.errors import CallError, ConfigError
from dbt_mxcp.settings import Settings
from dbt_mxcp.telemetry import JsonFormatter, Metrics, Telemetry, escape_label, from_settings


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
