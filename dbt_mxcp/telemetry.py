"""Observability for served calls: Prometheus metrics, OpenTelemetry traces and JSON logs.

The pipeline calls one thing, `Telemetry.observe`, around each call, and `Telemetry.span` around
its steps. Metrics are an in-house registry (no dependency) rendered in the Prometheus text format
0.0.4, and/or the same measurements on OpenTelemetry instruments exported over OTLP. Traces and
OTLP metrics need the `otel` extra; with traces off, spans are no-ops.

Nothing here ever records SQL text, argument values or who called: SQL appears only as its SHA-256,
and labels are the endpoint's kind, name and final status (a bounded set, from the registry).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import CallError

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DENIALS = frozenset({"denied", "policy_error"})
NO_SPAN: AbstractContextManager[Any] = nullcontext()

# The trace id of the call running in this thread, for log lines (set by `observe`).
current_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mxcp_trace_id", default=None)


def escape_label(value: str) -> str:
    """A label value escaped as the exposition format asks: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...], le: str | None = None) -> str:
    parts = [f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if le is not None:
        parts.append(f'le="{le}"')
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0


class Metrics:
    """Counters, the latency histogram and the in-flight gauge of served calls; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # calls finish in worker threads
        self.calls: dict[tuple[str, str, str], int] = {}
        self.denials: dict[tuple[str, str], int] = {}
        self.rows: dict[tuple[str, str], int] = {}
        self.durations: dict[tuple[str, str], _Histogram] = {}
        self.in_flight = 0

    def started(self) -> None:
        """A call began."""
        with self._lock:
            self.in_flight += 1

    def finished(self, kind: str, endpoint: str, status: str, seconds: float, rows: int) -> None:
        """A call ended with `status` after `seconds`, returning `rows` rows."""
        key = (kind, endpoint)
        with self._lock:
            self.in_flight -= 1
            self.calls[(kind, endpoint, status)] = self.calls.get((kind, endpoint, status), 0) + 1
            if status in DENIALS:
                self.denials[key] = self.denials.get(key, 0) + 1
            self.rows[key] = self.rows.get(key, 0) + rows
            histogram = self.durations.get(key)
            if histogram is None:
                histogram = self.durations[key] = _Histogram()
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    histogram.counts[i] += 1
                    break
            histogram.total += seconds
            histogram.count += 1

    def render(self, audit_write_failures: int | None = None) -> str:
        """Everything, in the Prometheus text exposition format (0.0.4)."""
        names = ("kind", "endpoint")
        out: list[str] = []

        def header(name: str, kind: str, text: str) -> None:
            out.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

        with self._lock:
            header("mxcp_calls_total", "counter", "Calls answered, by endpoint and final status.")
            for (kind, endpoint, status), n in sorted(self.calls.items()):
                out.append(f"mxcp_calls_total{_labels((*names, 'status'), (kind, endpoint, status))} {n}")
            header("mxcp_denials_total", "counter", "Calls refused by a policy (status denied or policy_error).")
            out += [f"mxcp_denials_total{_labels(names, k)} {n}" for k, n in sorted(self.denials.items())]
            header("mxcp_rows_total", "counter", "Rows returned by calls.")
            out += [f"mxcp_rows_total{_labels(names, k)} {n}" for k, n in sorted(self.rows.items())]
            header("mxcp_call_duration_seconds", "histogram", "How long calls took, audit write included.")
            for key, h in sorted(self.durations.items()):
                cumulative = 0
                for bound, n in zip(BUCKETS, h.counts, strict=True):
                    cumulative += n
                    out.append(f"mxcp_call_duration_seconds_bucket{_labels(names, key, repr(bound))} {cumulative}")
                out.append(f"mxcp_call_duration_seconds_bucket{_labels(names, key, '+Inf')} {h.count}")
                out.append(f"mxcp_call_duration_seconds_sum{_labels(names, key)} {_number(h.total)}")
                out.append(f"mxcp_call_duration_seconds_count{_labels(names, key)} {h.count}")
            header("mxcp_calls_in_flight", "gauge", "Calls running now.")
            out.append(f"mxcp_calls_in_flight {self.in_flight}")
        if audit_write_failures is not None:
            header("mxcp_audit_write_failures_total", "counter", "Audit records that could not be written.")
            out.append(f"mxcp_audit_write_failures_total {audit_write_failures}")
        return "\n".join(out) + "\n"


class OtelMetrics:
    """The measurements of `Metrics` on OpenTelemetry instruments, exported by the meter's provider."""

    def __init__(self, meter: Meter, provider: MeterProvider | None = None) -> None:
        # Names and units chosen so a collector's Prometheus exporter yields the /metrics names
        # (mxcp.calls -> mxcp_calls_total, mxcp.call.duration in s -> mxcp_call_duration_seconds).
        self._calls = meter.create_counter("mxcp.calls", unit="{call}",
                                           description="Calls answered, by endpoint and final status.")
        self._denials = meter.create_counter("mxcp.denials", unit="{call}",
                                             description="Calls refused by a policy (status denied or policy_error).")
        self._rows = meter.create_counter("mxcp.rows", unit="{row}", description="Rows returned by calls.")
        self._duration = meter.create_histogram("mxcp.call.duration", unit="s",
                                                description="How long calls took, audit write included.")
        self._in_flight = meter.create_up_down_counter("mxcp.calls.in_flight", unit="{call}",
                                                       description="Calls running now.")
        self._provider = provider  # the SDK MeterProvider we made, flushed on close

    def started(self) -> None:
        """A call began."""
        self._in_flight.add(1)

    def finished(self, kind: str, endpoint: str, status: str, seconds: float, rows: int) -> None:
        """A call ended with `status` after `seconds`, returning `rows` rows."""
        # The same bounded attributes as the Prometheus labels: never arguments, SQL or callers.
        attributes = {"kind": kind, "endpoint": endpoint}
        self._in_flight.add(-1)
        self._calls.add(1, {**attributes, "status": status})
        if status in DENIALS:
            self._denials.add(1, attributes)
        self._rows.add(rows, attributes)
        self._duration.record(seconds, attributes)

    def close(self) -> None:
        """Export what is left and stop the exporter."""
        if self._provider is not None:
            self._provider.shutdown()  # the periodic reader collects and exports once more first
            self._provider = None


class Observed:
    """What `observe` learns of one call: its trace id, and the rows the pipeline reports."""

    __slots__ = ("rows", "span", "trace_id")

    def __init__(self, trace_id: str, span: Any) -> None:
        self.trace_id = trace_id
        self.span = span
        self.rows = 0


def sql_hash(sql: str) -> str:
    """The SHA-256 of a query's text: what traces carry instead of the SQL itself."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


class Telemetry:
    """Metrics (Prometheus and/or OTLP) and traces for a pipeline; each may be off (None)."""

    def __init__(self, metrics: Metrics | None = None, tracer: Any = None, provider: Any = None,
                 otel_metrics: OtelMetrics | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self._provider = provider  # the SDK TracerProvider we made, flushed on close
        self.otel_metrics = otel_metrics

    @contextmanager
    def observe(self, kind: str, endpoint: str, transport: str) -> Iterator[Observed]:
        """Around one call: its `mxcp.call` span, trace id (for audit and logs) and metrics."""
        metrics = self.metrics
        otel = self.otel_metrics
        started = time.perf_counter()
        if metrics is not None:
            metrics.started()
        if otel is not None:
            otel.started()
        status = "ok"
        span_cm = self.tracer.start_as_current_span(
            "mxcp.call", attributes={"mxcp.kind": kind, "mxcp.endpoint": endpoint, "mxcp.transport": transport},
            record_exception=False, set_status_on_exception=False) if self.tracer is not None else NO_SPAN
        with span_cm as span:
            trace_id = format(span.get_span_context().trace_id, "032x") if span is not None else uuid.uuid4().hex
            observed = Observed(trace_id, span)
            token = current_trace_id.set(trace_id)
            try:
                yield observed
            except CallError as exc:
                status = exc.kind
                raise
            except BaseException:
                status = "internal_error"
                raise
            finally:
                current_trace_id.reset(token)
                if span is not None:
                    _end_call_span(span, status, observed.rows)
                if metrics is not None or otel is not None:
                    seconds = time.perf_counter() - started  # one duration, so both exports agree
                    if metrics is not None:
                        metrics.finished(kind, endpoint, status, seconds, observed.rows)
                    if otel is not None:
                        otel.finished(kind, endpoint, status, seconds, observed.rows)

    def span(self, name: str, sql: str | None = None) -> AbstractContextManager[Any]:
        """A child span of the current call (a no-op without traces); `sql` is recorded as its hash only."""
        if self.tracer is None:
            return NO_SPAN
        attributes = {"db.statement.hash": sql_hash(sql)} if sql is not None else None
        span: AbstractContextManager[Any] = self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False)
        return span

    def close(self) -> None:
        """Flush and stop the trace and metric exporters."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
        if self.otel_metrics is not None:
            self.otel_metrics.close()


def _end_call_span(span: Any, status: str, rows: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("mxcp.status", status)
    span.set_attribute("mxcp.rows", rows)
    if status != "ok":
        # The kind only: an error's message may quote argument values.
        span.set_status(Status(StatusCode.ERROR, status))


def make_tracer(service_name: str, exporter: Any = None, otlp_endpoint: str | None = None) -> tuple[Any, Any]:
    """(tracer, provider) exporting to `exporter` (tests) or OTLP/HTTP; ImportError without the otel extra."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # Our own provider, not the global one: a host process's tracing setup is left alone.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # None lets the exporter read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself.
        url = f"{otlp_endpoint.rstrip('/')}/v1/traces" if otlp_endpoint else None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider.get_tracer("dbt_mxcp"), provider


def make_meter(service_name: str, reader: MetricReader | None = None, otlp_endpoint: str | None = None,
               interval: float | None = None) -> OtelMetrics:
    """OTel instruments read by `reader` (tests) or pushed by OTLP/HTTP every `interval` s; ImportError without otel."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    if reader is None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        # None lets the exporter and reader read OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT and
        # OTEL_METRIC_EXPORT_INTERVAL themselves.
        url = f"{otlp_endpoint.rstrip('/')}/v1/metrics" if otlp_endpoint else None
        millis = interval * 1000 if interval is not None else None
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url), export_interval_millis=millis)
    # The /metrics buckets, so both exports can be compared (the SDK's default ones are for milliseconds).
    buckets = View(instrument_name="mxcp.call.duration", aggregation=ExplicitBucketHistogramAggregation(BUCKETS))
    # Our own provider, not the global one, as for traces.
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": service_name}),
                             views=[buckets])
    return OtelMetrics(provider.get_meter("dbt_mxcp"), provider)


def from_settings(settings: Any, exporter: Any = None, metric_reader: MetricReader | None = None) -> Telemetry:
    """The telemetry `settings.telemetry` asks for; traces or OTLP metrics without the otel extra are a ConfigError."""
    from .errors import ConfigError

    cfg = settings.telemetry
    tracer = provider = None
    otel_metrics = None
    if cfg.traces:
        try:
            tracer, provider = make_tracer(cfg.service_name, exporter, cfg.otlp_endpoint)
        except ImportError:
            raise ConfigError("telemetry.traces needs OpenTelemetry: pip install 'dbt-mxcp[otel]'") from None
    if cfg.otlp_metrics:
        try:
            otel_metrics = make_meter(cfg.service_name, metric_reader, cfg.otlp_endpoint, cfg.otlp_metrics_interval)
        except ImportError:
            if provider is not None:
                provider.shutdown()
            raise ConfigError("telemetry.otlp_metrics needs OpenTelemetry: pip install 'dbt-mxcp[otel]'") from None
    return Telemetry(Metrics() if cfg.metrics else None, tracer, provider, otel_metrics)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the call's trace id inside a call."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        trace_id = current_trace_id.get()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str) -> None:
    """Root logging to stderr, at INFO, as dbt-style text lines or JSON lines."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
