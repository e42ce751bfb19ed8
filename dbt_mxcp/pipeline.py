"""The per-call pipeline every entry point uses (`run`, `test`, `serve`):

claims → validate arguments → input policies → execute (limits) → shape → validate result →
output policies. Every step fails closed: anything it cannot decide is an error, never a pass.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from .audit.auditor import Auditor
from .engine import Interrupter, Limits, QueryResult, run_query
from .errors import CallError
from .jsonvalues import dumps, to_json_value
from .policy import Decision, activation, apply_output, check_input, denies_caller
from .prompts import render_messages
from .ratelimit import RateLimiter
from .registry import Endpoint, Kind, Registry
from .sql import capped
from .telemetry import NO_SPAN, Observed, Telemetry
from .types import SchemaChecker, to_bind_value
from .user import MissingClaim, claim_value, make_user
from .warehouse import Warehouse, open_warehouse
from .writes import WriteDatabase, affected_rows, writes_disabled


@dataclass
class Outcome:
    """A call's answer with what happened on the way (for the caller, tests and the audit log)."""

    endpoint: Endpoint
    arguments: dict[str, Any]
    value: Any
    row_count: int = 0
    affected_rows: int | None = None
    truncated: bool = False
    note: str | None = None
    decisions: list[Decision] = field(default_factory=list)

    def structured(self) -> dict[str, Any]:
        """The result as MCP's `structuredContent` (plain JSON): an object return is the row itself;
        arrays and scalars are wrapped as ``{"result": ...}``, with ``truncated``/``note`` when cut."""
        t = self.endpoint.return_type
        if t is not None and t.type == "object":
            value: Any = self.value
        else:
            value = {"result": self.value}
            if self.truncated:
                value.update(truncated=True, note=self.note)
        # Decimals become JSON numbers: the MCP SDK would otherwise write them as strings.
        plain: dict[str, Any] = json.loads(dumps(value))
        return plain


class Reporter(Protocol):
    """Where a call reports progress and log messages (the MCP client, when serving)."""

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        """Report how far the call has come."""

    def log(self, level: str, message: str) -> None:
        """Send a log message about the call."""


class _Checkers:
    """JSON Schema checkers compiled once per endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    @cached_property
    def arguments(self) -> SchemaChecker:
        return SchemaChecker(self.endpoint.input_schema(), finite=True)

    @cached_property
    def bound(self) -> dict[str, SchemaChecker]:
        return {p.name: SchemaChecker(p.json_schema()) for p in self.endpoint.parameters if p.bind is not None}

    @cached_property
    def result(self) -> SchemaChecker | None:
        schema = self.endpoint.return_schema()
        return SchemaChecker(schema) if schema is not None else None


class Pipeline:
    """Answers calls against one registry and one warehouse."""

    def __init__(self, registry: Registry, warehouse: Warehouse | None, limits: Limits | None = None,
                 settings: Any = None, writes: WriteDatabase | None = None, auditor: Auditor | None = None,
                 rate_limiter: RateLimiter | None = None, telemetry: Telemetry | None = None) -> None:
        self.registry = registry
        self.warehouse = warehouse
        self.limits = limits or Limits()
        self.settings = settings
        self.writes = writes
        self.auditor = auditor
        self.rate_limiter = rate_limiter
        self.telemetry = telemetry
        self._checkers: dict[int, _Checkers] = {}

    def visible(self, endpoint: Endpoint, user: Mapping[str, Any] | None) -> bool:
        """Whether `user` may ever call `endpoint`: no claim it binds is missing, and no input deny rule
        that reads only the caller denies them. Lists leave out what is not visible."""
        caller = make_user(user)
        for p in endpoint.parameters:
            if p.bind is not None:
                try:
                    claim_value(caller, p.bind)
                except MissingClaim:
                    return False
        names = [p.name for p in endpoint.parameters]
        user_only = [r for r in endpoint.input_rules if r.reads_only_user(names)]
        return not (user_only and denies_caller(user_only, caller))

    def listed(self, kind: Kind, user: Mapping[str, Any] | None) -> list[Endpoint]:
        """What `user` is shown of `kind` (tools/list, ...): visible to them, and write tools only when
        there is a write database."""
        return [e for e in self.registry.all(kind) if self.visible(e, user)
                and (self.writes is not None or getattr(e.spec, "access", "read") != "write")]

    def endpoint(self, kind: Kind, name: str) -> Endpoint:
        """The enabled endpoint, or a not_found error listing what exists."""
        found = self.registry.get(kind, name)
        if found is None:
            names = sorted(e.name for e in self.registry.all(kind))
            known = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none"
            raise CallError("not_found", f"unknown {kind} {name!r} (known: {known})")
        return found

    def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                  user: Mapping[str, Any] | None = None) -> Outcome:
        """Call the tool `name`."""
        return self.call(self.endpoint("tool", name), arguments or {}, user)

    def read_resource(self, uri: str, user: Mapping[str, Any] | None = None,
                      interrupter: Interrupter | None = None, reporter: Reporter | None = None,
                      transport: str = "cli") -> Outcome:
        """Read the resource at the concrete `uri` (its variables become the arguments)."""
        match = self.registry.match_resource(uri)
        if match is None:
            raise CallError("not_found", f"no resource matches {uri!r}")
        endpoint, variables = match
        arguments: dict[str, Any] = {}
        by_name = {p.name: p for p in endpoint.parameters}
        for key, text in variables.items():
            try:
                arguments[key] = parse_text_value(by_name[key], text)
            except ValueError as exc:
                raise CallError("invalid_arguments", f"uri variable '{key}': {exc}") from None
        return self.call(endpoint, arguments, user, interrupter, reporter, transport)

    def get_prompt(self, name: str, arguments: Mapping[str, Any] | None,
                   user: Mapping[str, Any] | None = None) -> Outcome:
        """Render the prompt `name`."""
        return self.call(self.endpoint("prompt", name), arguments or {}, user)

    def call(self, endpoint: Endpoint, arguments: Mapping[str, Any], user: Mapping[str, Any] | None,
             interrupter: Interrupter | None = None, reporter: Reporter | None = None,
             transport: str = "cli") -> Outcome:
        """Run one call of `endpoint` through every step of the pipeline, then audit it."""
        if self.telemetry is None:
            return self._audited(endpoint, arguments, user, interrupter, reporter, transport, None)
        # Metrics and the call's span see the status the caller sees (an audit failure included).
        with self.telemetry.observe(endpoint.kind, endpoint.name, transport) as observed:
            return self._audited(endpoint, arguments, user, interrupter, reporter, transport, observed)

    def _audited(self, endpoint: Endpoint, arguments: Mapping[str, Any], user: Mapping[str, Any] | None,
                 interrupter: Interrupter | None, reporter: Reporter | None, transport: str,
                 observed: Observed | None) -> Outcome:
        started = time.perf_counter()
        caller = make_user(user)
        decisions: list[Decision] = []
        trace_id = observed.trace_id if observed is not None else None  # audit records carry the trace's id
        try:
            outcome = self._call(endpoint, arguments, caller, decisions, interrupter, reporter)
        except CallError as exc:
            self._audit(endpoint, arguments, caller, transport, decisions, started, exc.kind, error=str(exc),
                        trace_id=trace_id)
            raise
        except Exception as exc:  # a bug still gets its record before it surfaces
            self._audit(endpoint, arguments, caller, transport, decisions, started, "internal_error",
                        error=f"{type(exc).__name__}: {exc}", trace_id=trace_id)
            raise
        if observed is not None:
            observed.rows = outcome.row_count
        self._audit(endpoint, outcome.arguments, caller, transport, decisions, started, "ok",
                    rows=outcome.row_count, affected_rows=outcome.affected_rows, truncated=outcome.truncated,
                    result=outcome.value, trace_id=trace_id)
        return outcome

    def _span(self, name: str, sql: str | None = None) -> AbstractContextManager[Any]:
        """A child span of the call's trace; a shared no-op when traces are off."""
        return NO_SPAN if self.telemetry is None else self.telemetry.span(name, sql)

    def _audit(self, endpoint: Endpoint, arguments: Mapping[str, Any], caller: Mapping[str, Any], transport: str,
               decisions: list[Decision], started: float, status: str, **details: Any) -> None:
        if self.auditor is not None:
            with self._span("mxcp.audit"):
                self.auditor.record(endpoint=endpoint, arguments=arguments if isinstance(arguments, Mapping) else {},
                                    user=caller, transport=transport, status=status, decisions=decisions,
                                    duration_ms=(time.perf_counter() - started) * 1000, **details)

    def _call(self, endpoint: Endpoint, arguments: Mapping[str, Any], caller: Mapping[str, Any],
              decisions: list[Decision], interrupter: Interrupter | None, reporter: Reporter | None) -> Outcome:
        if self.rate_limiter is not None:
            self.rate_limiter.check(endpoint.label, caller)
        checkers = self._checkers.setdefault(id(endpoint), _Checkers(endpoint))
        args = self._arguments(endpoint, checkers, arguments, caller)
        outcome = Outcome(endpoint, args, None, decisions=decisions)
        if endpoint.input_rules:
            with self._span("mxcp.policy.input"):
                check_input(endpoint.input_rules, activation(caller, args), outcome.decisions)
        if endpoint.kind == "prompt":
            outcome.value = render_messages(endpoint.spec, args)  # type: ignore[arg-type]
            return outcome
        if endpoint.source_kind == "python":
            self._run_python(endpoint, args, caller, outcome, interrupter, reporter)
        else:
            result = self._execute(endpoint, args, interrupter)
            if getattr(endpoint.spec, "access", "read") == "write":
                outcome.affected_rows = affected_rows(result)
            outcome.value = shape(endpoint, result)
            outcome.row_count = len(result.rows)
            if result.truncated:
                outcome.truncated = True
                outcome.note = truncation_note(len(result.rows), result.truncated_by, self._limits(endpoint))
        checkers = self._checkers[id(endpoint)]
        if checkers.result is not None:
            problems = checkers.result.problems(outcome.value)
            if problems:
                raise CallError("invalid_result", "the result does not match the declared return type: "
                                + "; ".join(problems[:5]))
        if endpoint.output_rules:
            reads_response = any(r.reads_response for r in endpoint.output_rules)
            variables = activation(caller, args, outcome.value, with_response=reads_response)
            with self._span("mxcp.policy.output"):
                outcome.value = apply_output(endpoint.output_rules, variables, outcome.value,
                                             endpoint.sensitive_paths, outcome.decisions)
        return outcome

    def _arguments(self, endpoint: Endpoint, checkers: _Checkers, arguments: Mapping[str, Any],
                   caller: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(arguments, Mapping):
            raise CallError("invalid_arguments", "arguments must be an object mapping parameter names to values")
        args = dict(arguments)
        bound = [p for p in endpoint.parameters if p.bind is not None]
        for p in bound:
            if p.name in args:
                raise CallError("invalid_arguments", f"parameter '{p.name}' takes its value from {p.bind} and "
                                                     "cannot be supplied by the caller")
        problems = checkers.arguments.problems(args)
        if problems:
            raise CallError("invalid_arguments", "invalid arguments: " + "; ".join(problems))
        for p in endpoint.client_parameters:
            if p.name not in args and p.has_default:
                args[p.name] = p.default
        for p in bound:
            try:
                args[p.name] = claim_value(caller, p.bind or "")
            except MissingClaim:
                raise CallError("denied", f"this {endpoint.kind} needs {p.bind} from the caller's identity, "
                                          "which is missing") from None
            problems = checkers.bound[p.name].problems(args[p.name])
            if problems:
                raise CallError("denied", f"the caller's {p.bind} does not fit parameter '{p.name}': "
                                          + "; ".join(problems))
        return args

    def _run_python(self, endpoint: Endpoint, args: Mapping[str, Any], caller: Mapping[str, Any], outcome: Outcome,
                    interrupter: Interrupter | None, reporter: Reporter | None) -> None:
        from . import runtime
        from .python_endpoints import invoke, load_function

        limits = self._limits(endpoint)
        path = (self.registry.project_dir or Path.cwd()) / (endpoint.source_file or "")
        function = load_function(path, str(endpoint.spec.name))

        def execute(sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
            if self.warehouse is None:
                raise CallError("execution", "no warehouse to query")
            cursor = self.warehouse.cursor()
            try:
                with self._span("mxcp.sql", sql):
                    return run_query(cursor, sql, params, limits, interrupter).rows
            finally:
                cursor.close()

        context = runtime.CallContext(user=caller, execute=execute, settings=self.settings,
                                      report=reporter.progress if reporter else None,
                                      send_log=reporter.log if reporter else None)
        token = runtime._current.set(context)
        try:
            value = to_json_value(invoke(function, args))
        finally:
            runtime._current.reset(token)
        if isinstance(value, list):
            outcome.row_count = len(value)
            if len(value) > limits.max_rows:
                value = value[:limits.max_rows]
                outcome.truncated = True
                outcome.note = truncation_note(limits.max_rows, "max_rows", limits)
        else:
            outcome.row_count = 1
        outcome.value = value

    def _limits(self, endpoint: Endpoint) -> Limits:
        spec = endpoint.spec
        return Limits(
            max_rows=min(getattr(spec, "max_rows", None) or self.limits.max_rows, self.limits.max_rows),
            max_bytes=min(getattr(spec, "max_bytes", None) or self.limits.max_bytes, self.limits.max_bytes),
            timeout=min(getattr(spec, "timeout", None) or self.limits.timeout, self.limits.timeout),
        )

    def _execute(self, endpoint: Endpoint, args: Mapping[str, Any], interrupter: Interrupter | None) -> QueryResult:
        if endpoint.sql is None:
            raise CallError("execution", f"{endpoint.label} has no SQL to run")
        types = {p.name: p for p in endpoint.parameters}
        params = {name: to_bind_value(types[name], args.get(name)) for name in types}
        if getattr(endpoint.spec, "access", "read") == "write":
            if self.writes is None:
                raise writes_disabled()
            with self._span("mxcp.sql", endpoint.sql):
                return self.writes.execute(endpoint.sql, params, self._limits(endpoint), interrupter)
        if self.warehouse is None:
            raise CallError("execution", "no warehouse to query")
        limits = self._limits(endpoint)
        sql = capped(endpoint.sql, limits.max_rows + 1)  # one row past the cap shows the result was cut
        cursor = self.warehouse.cursor()
        try:
            with self._span("mxcp.sql", endpoint.sql):
                return run_query(cursor, sql, params, limits, interrupter, types)
        finally:
            cursor.close()


def shape(endpoint: Endpoint, result: QueryResult) -> Any:
    """Rows shaped by the return type: array → rows (or their one value each, for scalar items),
    object → the one row, scalar → its one value."""
    t = endpoint.return_type
    kind = t.type if t is not None else "array"
    if kind == "array":
        items = t.items if t is not None else None
        if items is None or items.type == "object":
            return result.rows
        return [_only_value(endpoint, row, items.type) for row in result.rows]
    if result.truncated_by == "max_bytes":
        raise CallError("invalid_result", f"the {endpoint.kind}'s single {kind} is larger than the byte cap")
    if len(result.rows) == 0:
        if endpoint.kind == "resource":
            raise CallError("not_found", "resource not found: no row found")
        raise CallError("no_row", "no row found")
    if len(result.rows) != 1:
        raise CallError("invalid_result", f"the {endpoint.kind} returns a single {kind} but the query returned more "
                                          "than one row")
    row = result.rows[0]
    return row if kind == "object" else _only_value(endpoint, row, kind)


def _only_value(endpoint: Endpoint, row: dict[str, Any], kind: str) -> Any:
    if len(row) != 1:
        raise CallError("invalid_result", f"the {endpoint.kind} returns a {kind} per row, so the query must return "
                                          f"one column; it returned {len(row)} ({', '.join(row)})")
    return next(iter(row.values()))


def truncation_note(shown: int, truncated_by: str | None, limits: Limits) -> str:
    """What a truncated result tells its reader, and how to narrow the query."""
    cap = f"the {limits.max_bytes:,}-byte cap" if truncated_by == "max_bytes" else f"the {limits.max_rows:,}-row cap"
    return (f"Only the first {shown:,} rows are shown: the result reached {cap}. "
            "Narrow the query with more specific arguments to see the rest.")


def parse_text_value(param: Any, text: str) -> Any:
    """A text value (a URI variable, a CLI --param) converted by the declared type; ValueError names the rule."""
    import json

    kind = getattr(param, "type", "string")
    if kind == "string":
        return text
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):  # 'nan', 'inf', '1e400': no JSON number, and NaN passes every bound
            raise ValueError(f"must be a finite number, got {text!r}")
        return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    try:
        return json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except (ValueError, RecursionError):  # not JSON, NaN or Infinity, or nested too deep to read
        raise ValueError(f"must be JSON ({kind}), got {text!r}") from None


def _not_finite(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


@contextmanager
def open_pipeline(loaded: Any, *, lock_wait: float, warehouse: bool = True, writes: bool = True,
                  audit: bool = True) -> Iterator[Pipeline]:
    """A pipeline over a loaded project for one command (`run`, `test`, `evals`), closed afterwards.

    `writes=False` leaves write endpoints refused (tests and evals never change data).
    """
    db = open_warehouse(loaded.require_warehouse(), lock_wait=lock_wait) if warehouse else None
    write_db = None
    auditor = None
    try:
        if writes and loaded.settings.writes.enabled:
            write_db = WriteDatabase.from_settings(loaded.settings.writes, loaded.project.project_dir)
        if audit:
            from .audit.auditor import make_auditor

            auditor = make_auditor(loaded.settings, loaded.project.log_path, loaded.project.project_dir)
        yield Pipeline(loaded.registry, db, loaded.settings.engine_limits(), loaded.settings, write_db, auditor)
    finally:
        for resource in (db, write_db, auditor):
            if resource is not None:
                resource.close()
