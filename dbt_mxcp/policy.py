"""CEL policies: compiled once at load, evaluated per call, failing closed.

The CEL engine is `common-expression-language` (Rust): about 5 µs an evaluation, against
100-270 µs for the pure-Python cel-python measured before it (see docs/benchmarks.md).

An evaluation error, a missing field or a non-boolean result denies the call: a rule that
cannot be evaluated never lets a call through, and never leaves a field unmasked.

A cost bound stops pathological conditions (see "the cost bound" below): one that could take too
long is rejected when the project loads, and one whose cost depends on how large the call's inputs
are is estimated again for each call, denying it when over the limit.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .endpoints import PolicyRule
from .errors import CallError
from .policy_cost import CostExceeded, Poly, TooCostly, check_cost, cost_bound

MASK = "****"
MAX_CONDITION_CHARS = 4000  # bounds compiling a rule and estimating its cost


class PolicySyntaxError(ValueError):
    """A CEL condition that does not compile, or that could cost too much to evaluate."""


@dataclass(frozen=True)
class CompiledRule:
    """A policy rule with its CEL program."""

    rule: PolicyRule
    program: Any = field(repr=False, compare=False)
    # the estimated cost to check at each call, in the sizes of its inputs; None when it need not be
    cost: Poly | None = field(default=None, repr=False, compare=False)

    def reads_only_user(self, parameter_names: Sequence[str]) -> bool:
        """Whether the condition can be decided from the caller alone (it names no argument, no response)."""
        names = [*parameter_names, "response"]
        return not any(re.search(rf"\b{re.escape(n)}\b", self.rule.condition) for n in names)

    @property
    def reads_response(self) -> bool:
        """Whether the condition names `response` (converting a large result for CEL is not free)."""
        return re.search(r"\bresponse\b", self.rule.condition) is not None


def compile_rules(rules: Sequence[PolicyRule], phase: str) -> tuple[CompiledRule, ...]:
    """Compile each rule's condition and bound its cost; an error names the phase, the rule's index and why."""
    if not rules:
        return ()
    import cel

    out = []
    for i, rule in enumerate(rules):
        if len(rule.condition) > MAX_CONDITION_CHARS:
            raise PolicySyntaxError(f"policies.{phase}[{i}] condition is {len(rule.condition):,} characters long; "
                                    f"the limit is {MAX_CONDITION_CHARS:,}")
        try:
            program = cel.compile(rule.condition)
        except Exception as exc:  # the engine's parse error, with its caret drawing
            detail = " ".join(str(exc).split())
            raise PolicySyntaxError(f"policies.{phase}[{i}] condition {rule.condition!r} is not valid CEL: "
                                    f"{detail}") from None
        try:
            cost = cost_bound(rule.condition)
        except TooCostly as exc:
            raise PolicySyntaxError(f"policies.{phase}[{i}] condition {rule.condition!r} {exc}") from None
        out.append(CompiledRule(rule, program, cost))
    return tuple(out)


@dataclass
class Decision:
    """What one rule decided in one call (for the result and, later, the audit record)."""

    phase: str
    index: int
    action: str
    matched: bool | None
    error: str | None = None


def _plain(value: Any) -> Any:
    """A result value as plain JSON types, which is what CEL sees."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)  # one CEL type (double) for a DECIMAL column, whatever its digits
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _evaluate(compiled: CompiledRule, activation: Mapping[str, Any]) -> bool:
    if compiled.cost is not None:
        try:
            check_cost(compiled.cost, activation)
        except CostExceeded as exc:
            raise PolicyEvalError(str(exc)) from None
    try:
        result = compiled.program.execute(dict(activation))
    except Exception as exc:  # absent field, no such overload, division by zero, ...
        raise PolicyEvalError(_cel_message(exc)) from None
    if not isinstance(result, bool):
        raise PolicyEvalError(f"the condition returned {type(result).__name__}, not a boolean")
    return result


class PolicyEvalError(Exception):
    """A rule that could not be evaluated (it denies)."""


def _cel_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no such field {exc}"
    return " ".join(str(exc).split()) or type(exc).__name__


def activation(user: Mapping[str, Any], arguments: Mapping[str, Any], response: Any = None,
               with_response: bool = False) -> dict[str, Any]:
    """The CEL variables of one call: `user`, each argument by name, and `response` for output rules."""
    variables = {name: _plain(value) for name, value in arguments.items()}
    variables["user"] = _plain(dict(user))
    if with_response:
        variables["response"] = _plain(response)
    return variables


def denies_caller(rules: Sequence[CompiledRule], user: Mapping[str, Any]) -> bool:
    """Whether one of these user-only deny rules denies `user` (a rule that cannot be evaluated does)."""
    variables = {"user": _plain(dict(user))}
    for compiled in rules:
        try:
            if _evaluate(compiled, variables):
                return True
        except PolicyEvalError:
            return True
    return False


def check_input(rules: Sequence[CompiledRule], variables: Mapping[str, Any],
                decisions: list[Decision]) -> None:
    """Raise a denial if any input rule matches, or if any cannot be evaluated."""
    for i, compiled in enumerate(rules):
        try:
            matched = _evaluate(compiled, variables)
        except PolicyEvalError as exc:
            decisions.append(Decision("input", i, "deny", None, str(exc)))
            raise CallError("policy_error", f"denied: policy input[{i}] could not be evaluated ({exc}); "
                                            "a rule that cannot be evaluated denies") from None
        decisions.append(Decision("input", i, compiled.rule.action, matched))
        if matched:
            raise CallError("denied", compiled.rule.reason or f"denied by policy input[{i}]")


def apply_output(rules: Sequence[CompiledRule], variables: Mapping[str, Any], result: Any,
                 sensitive_paths: Sequence[str], decisions: list[Decision]) -> Any:
    """Apply each matching output rule to `result`; a rule that cannot be evaluated denies the call."""
    for i, compiled in enumerate(rules):
        rule = compiled.rule
        try:
            matched = _evaluate(compiled, variables)
        except PolicyEvalError as exc:
            decisions.append(Decision("output", i, rule.action, None, str(exc)))
            raise CallError("policy_error", f"denied: policy output[{i}] could not be evaluated ({exc}); "
                                            "a rule that cannot be evaluated denies") from None
        decisions.append(Decision("output", i, rule.action, matched))
        if not matched:
            continue
        if rule.action == "deny":
            raise CallError("denied", rule.reason or f"denied by policy output[{i}]")
        if rule.action == "filter_fields":
            result = edit_paths(result, rule.fields or [], _drop)
        elif rule.action == "mask_fields":
            result = edit_paths(result, rule.fields or [], _mask)
        elif rule.action == "filter_sensitive_fields":
            result = edit_paths(result, sensitive_paths, _drop)
    return result


def _drop(obj: dict[str, Any], key: str) -> None:
    obj.pop(key, None)


def _mask(obj: dict[str, Any], key: str) -> None:
    if key in obj:
        obj[key] = MASK


def edit_paths(value: Any, paths: Sequence[str], edit: Callable[[dict[str, Any], str], None]) -> Any:
    """A copy of `value` with `edit` applied at each dotted path (lists are walked item by item)."""
    import copy

    value = copy.deepcopy(value)
    for path in paths:
        _edit(value, path.split("."), edit)
    return value


def _edit(value: Any, parts: list[str], edit: Callable[[dict[str, Any], str], None]) -> None:
    if isinstance(value, list):
        for item in value:
            _edit(item, parts, edit)
    elif isinstance(value, dict):
        if len(parts) == 1:
            edit(value, parts[0])
        elif parts[0] in value:
            _edit(value[parts[0]], parts[1:], edit)
