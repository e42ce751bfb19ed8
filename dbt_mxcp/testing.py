"""Endpoint tests: each `tests:` case of an endpoint called through the pipeline a served call takes
(validation, defaults, bound claims, policies, limits, output policies), then its assertions checked.

A case *fails* when the endpoint answered but an assertion does not hold (an unexpected error
answer included), and *errors* when it could not run at all (e.g. the warehouse is locked).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .cli.report import CaseResult
from .endpoints import EndpointTest
from .errors import CallError
from .jsonvalues import dumps, to_json_value
from .pipeline import Pipeline
from .policy import MASK
from .registry import Endpoint

DENIALS = ("denied", "policy_error")  # the error kinds a policy gives
SHOWN_ROWS = 3  # rows quoted in a failure message


@dataclass(frozen=True)
class Case:
    """One test of one endpoint."""

    endpoint: Endpoint
    test: EndpointTest

    @property
    def suite(self) -> str:
        """`kind name`, e.g. ``tool search_people``."""
        return self.endpoint.label


def cases_of(endpoints: Iterable[Endpoint]) -> list[Case]:
    """Every test of these endpoints, in order."""
    return [Case(e, t) for e in endpoints for t in getattr(e.spec, "tests", None) or []]


def run_case(pipeline: Pipeline, case: Case) -> CaseResult:
    """Run one case through `pipeline` and check its assertions."""
    test = case.test
    started = time.perf_counter()
    value: Any = None
    error: CallError | None = None
    try:
        endpoint = case.endpoint
        if endpoint.kind == "resource":  # read by its URI, as a client reads it
            template = endpoint.uri_template
            uri = template.expand(dict(test.arguments)) if template is not None else endpoint.name
            outcome = pipeline.read_resource(uri, test.user_context)
        else:
            outcome = pipeline.call(endpoint, test.arguments, test.user_context)
        value = to_json_value(outcome.value)
    except CallError as exc:
        error = exc
    except Exception as exc:  # the case could not run: report it, run the others
        return _result(case, "error", started, f"{type(exc).__name__}: {exc}")
    failures = check(test, value, error)
    return _result(case, "fail" if failures else "pass", started, "\n".join(failures) or None)


def _result(case: Case, status: Any, started: float, message: str | None) -> CaseResult:
    return CaseResult(suite=case.suite, name=case.test.name, status=status,
                      duration=time.perf_counter() - started, message=message, node_id=case.endpoint.node_id,
                      path=case.endpoint.yml_path)


def check(test: EndpointTest, value: Any, error: CallError | None) -> list[str]:
    """What does not hold: one message per failed assertion (empty when the test passes)."""
    wanted_error = test.expect_error if test.expect_error is not None else test.expect_denied
    if error is not None:
        if wanted_error in (None, False):
            return [f"the call failed ({error.kind}): {error}"]
        if test.expect_denied not in (None, False) and error.kind not in DENIALS:
            return [f"expect_denied: the call failed, but not by a policy ({error.kind}): {error}"]
        if isinstance(wanted_error, str) and wanted_error not in str(error):
            return [f"the error does not contain {wanted_error!r}: {error}"]
        return []
    if wanted_error not in (None, False):
        key = "expect_error" if test.expect_error is not None else "expect_denied"
        return [f"{key}: the call succeeded, returning {_excerpt(value)}"]
    tolerance = test.tolerance or 0.0
    failures = []
    for key, expected in test.assertions.items():
        problem = ASSERTION_CHECKS[key](value, expected, tolerance)
        if problem:
            failures.append(f"{key}: {problem}")
    return failures


# Each check: (result, expected, tolerance) -> what is wrong, or None.


def _result_equals(value: Any, expected: Any, tolerance: float) -> str | None:
    where = _difference(value, expected, tolerance, partial=False)
    return None if where is None else f"the result differs {where}; got {_excerpt(value)}"


def _contains(value: Any, expected: Any, tolerance: float) -> str | None:
    if isinstance(value, list):  # as MXCP: some row matches the mapping, or the list holds the value
        if any(_difference(row, expected, tolerance, partial=True) is None for row in value):
            return None
        return f"no row has {_excerpt(expected)}; rows: {_excerpt(value)}"
    where = _difference(value, expected, tolerance, partial=True)
    return None if where is None else f"the result differs {where}; got {_excerpt(value)}"


def _not_contains(value: Any, fields: Any, tolerance: float) -> str | None:
    present = [f for f in fields for row in _rows(value) if _lookup(row, str(f)) is not _ABSENT]
    return f"field(s) {', '.join(sorted(set(present)))} present in the result" if present else None


def _masked(value: Any, fields: Any, tolerance: float) -> str | None:
    for field in fields:
        for row in _rows(value):
            found = _lookup(row, str(field))
            if found != MASK:
                shown = "absent" if found is _ABSENT else repr(found)
                return f"{field} should be masked ({MASK!r}) but is {shown}"
    return None


def _contains_item(value: Any, expected: Any, tolerance: float) -> str | None:
    if not isinstance(value, list):
        return f"the result is not a list of rows: {_excerpt(value)}"
    if any(_difference(row, expected, tolerance, partial=True) is None for row in value):
        return None
    return f"no row has {_excerpt(expected)}; rows: {_excerpt(value)}"


def _contains_all(value: Any, expected: Any, tolerance: float) -> str | None:
    if not isinstance(value, list):
        return f"the result is not a list of rows: {_excerpt(value)}"
    missing = [item for item in expected
               if not any(_difference(row, item, tolerance, partial=True) is None for row in value)]
    return f"no row has {_excerpt(missing[0])} ({len(missing)} missing); rows: {_excerpt(value)}" if missing else None


def _length(value: Any, expected: Any, tolerance: float) -> str | None:
    if not isinstance(value, list):
        return f"the result is not a list of rows: {_excerpt(value)}"
    return None if len(value) == expected else f"{len(value)} row(s), expected {expected}"


def _contains_text(value: Any, expected: Any, tolerance: float) -> str | None:
    text = _text(value)
    return None if str(expected) in text else f"{expected!r} is not in {text[:300]!r}"


ASSERTION_CHECKS: dict[str, Callable[[Any, Any, float], str | None]] = {
    "result": _result_equals, "result_contains": _contains, "result_not_contains": _not_contains,
    "result_masked": _masked, "result_contains_item": _contains_item, "result_contains_all": _contains_all,
    "result_length": _length, "result_contains_text": _contains_text,
}


def _text(value: Any) -> str:
    """A result as text: a string as is, a prompt's messages joined, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and set(m) == {"role", "content"}
                                                 for m in value):
        return "\n".join(str(m["content"]) for m in value)
    return dumps(value)


_ABSENT = object()


def _lookup(row: Any, path: str) -> Any:
    """The value at a dotted path, or _ABSENT."""
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _rows(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | Decimal) and not isinstance(x, bool)


def _difference(actual: Any, expected: Any, tolerance: float, partial: bool, at: str = "") -> str | None:
    """Where `actual` differs from `expected` (None when it matches). `partial`: extra fields allowed."""
    if _is_number(expected) and _is_number(actual):
        a, e = float(actual), float(expected)
        ok = actual == expected or (tolerance > 0 and math.isclose(a, e, rel_tol=0, abs_tol=tolerance))
        return None if ok else f"at {at or 'the top'}: {actual} != {expected}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"at {at or 'the top'}: expected an object, got {_excerpt(actual)}"
        extra = [] if partial else sorted(set(actual) - set(expected))
        if extra:
            return f"at {at or 'the top'}: unexpected field(s) {', '.join(extra)}"
        for key, item in expected.items():
            if key not in actual:
                return f"at {at + '.' if at else ''}{key}: missing"
            where = _difference(actual[key], item, tolerance, partial, f"{at + '.' if at else ''}{key}")
            if where:
                return where
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            got = f"{len(actual)} item(s)" if isinstance(actual, list) else _excerpt(actual)
            return f"at {at or 'the top'}: expected {len(expected)} item(s), got {got}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            where = _difference(a, e, tolerance, partial, f"{at}[{i}]")
            if where:
                return where
        return None
    same = type(actual) is type(expected) or not (isinstance(actual, bool) or isinstance(expected, bool))
    return None if same and actual == expected else f"at {at or 'the top'}: {actual!r} != {expected!r}"


def _excerpt(value: Any) -> str:
    if isinstance(value, list) and len(value) > SHOWN_ROWS:
        return dumps(value[:SHOWN_ROWS])[:-1] + f", ... {len(value) - SHOWN_ROWS} more]"
    text = dumps(value)
    return text if len(text) <= 400 else text[:400] + "..."

