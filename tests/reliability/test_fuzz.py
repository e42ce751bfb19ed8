"""Fuzzing with hypothesis (issue 8): argument validation, meta-block parsing, CEL policy inputs, and
malformed JSON-RPC frames against a served process over stdio and HTTP.

Every property states what must never happen: an exception other than the package's own error, a
valid value refused, a policy that errs and still lets a call through, a server that dies, hangs,
answers 5xx, or writes anything but JSON-RPC on stdout.

In CI (no --long) the examples are derandomized (`derandomize=True`: the same examples every run, so
CI is stable and a failure reproduces); under --long they are random and many more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbt_mxcp.endpoints import MxcpBlock, PolicyRule, PromptSpec, ResourceSpec, ToolSpec, format_validation_error
from dbt_mxcp.errors import CallError, EndpointProblem, RegistryError
from dbt_mxcp.manifest import Manifest
from dbt_mxcp.pipeline import Pipeline, parse_text_value
from dbt_mxcp.policy import Decision, activation, apply_output, check_input, compile_rules, denies_caller
from dbt_mxcp.registry import Endpoint, Registry, build_registry
from dbt_mxcp.server.adapter import output_schema, tool_of
from dbt_mxcp.types import SchemaChecker
from dbt_mxcp.user import make_user
from tests.helpers import BIN, REPO, Project, env, free_port, stop, wait_for_http
from tests.reliability.conftest import Scale

SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def _settings(scale: Scale, ci: int, long: int) -> settings:
    return settings(max_examples=scale.pick(ci, long), deadline=None, derandomize=not scale.long,
                    suppress_health_check=SUPPRESS, database=None)


# ---- JSON values ------------------------------------------------------------------------------------

HUGE_INTS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400, -(10**400)]
NONFINITE = [math.nan, math.inf, -math.inf]
ODD_FLOATS = [0.0, -0.0, 1e-300, 5e-324, 1e308, -1e308, 0.1, 1.5, 100.0, 1e16]
TRICKY_STRINGS = [
    "", " ", "0", "-1", "1e400", "NaN", "true", "null", "[]", "{}", "\x00", "\u2028", "\ud7ff", "é", "\U0001d54f",
    "2020-01-01", "2020-02-30", "2021-02-29", "0000-01-01", "9999-12-31", "2020-1-1", "20200101",
    "12:00", "24:00", "23:59:60", "12:00:00.123456789", "12:00:00.1234567890", "12:00:00Z", "12:00:00+25:00",
    "2020-01-01T00:00:00Z", "2020-01-01t00:00:00z", "2020-01-01 00:00:00", "2020-01-01T00:00:00.123456789+01:00",
    "2020-01-01T24:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00",
    "P", "PT", "P1Y2M3W4DT5H6M7.5S", "PT0.5S", "P1.5D", "-P1D",
    "a@b.c", "@b.c", "a@b", "mailto:x", "http://", "x:", "1x:y",
    "'; drop table people; --", "$id", "{{ this }}", "{% raw %}", "[NaN]", '{"a": Infinity}', "[1e400]",
]
huge_ints = st.integers(0, len(HUGE_INTS) - 1).map(HUGE_INTS.__getitem__)
long_texts = st.integers(1_000, 5_000).map(lambda n: "a" * n)
scalars = (st.none() | st.booleans() | st.integers() | huge_ints
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(ODD_FLOATS)
           | st.text(max_size=30) | st.sampled_from(TRICKY_STRINGS) | long_texts)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


def _canon(value: Any) -> str:
    """A key under which JSON Schema's equality (1 == 1.0, key order ignored; true != 1) holds."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return ["num", str(Fraction(v))]
        if isinstance(v, list):
            return [norm(x) for x in v]
        return sorted((k, norm(x)) for k, x in v.items())
    return json.dumps(norm(value))


# ---- declared types and values that satisfy them ------------------------------------------------------

NAMES = ["a", "b", "id", "team", "q", "limit", "since", "x_1"]
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
PATTERNS = [r"^[a-z]{1,8}$", r"^[A-Z]{2}-\d{3}$", r"ab+c", r"^\w+@\w+\.(com|org)$", r"^$|^x+$"]


def _formatted(fmt: str) -> st.SearchStrategy[str]:
    if fmt == "date":
        return st.dates().map(dt.date.isoformat)
    if fmt == "time":
        return st.times(timezones=st.none() | OFFSETS).map(dt.time.isoformat)
    if fmt == "date-time":
        aware = st.datetimes(timezones=OFFSETS).map(dt.datetime.isoformat)
        return aware | aware.map(lambda s: s[:-6] + "Z" if s.endswith("+00:00") else s)
    if fmt == "timestamp":
        return st.datetimes().map(lambda d: d.isoformat(sep=" ") if d.second % 2 else d.isoformat())
    if fmt == "email":
        return st.from_regex(r"[a-z0-9._]{1,10}@[a-z]{1,10}\.[a-z]{2,5}", fullmatch=True)
    if fmt == "uri":
        return st.from_regex(r"(https?|urn|mailto|s3):[a-z0-9/._~%-]{0,20}", fullmatch=True)
    assert fmt == "duration"
    units = st.lists(st.sampled_from("YMWD"), unique=True, min_size=1).map(lambda us: [u for u in "YMWD" if u in us])
    times = st.lists(st.sampled_from("HMS"), unique=True).map(lambda us: [u for u in "HMS" if u in us])
    return st.tuples(units, times, st.integers(0, 999)).map(
        lambda t: "P" + "".join(f"{t[2]}{u}" for u in t[0]) + ("T" + "".join(f"{t[2]}{u}" for u in t[1]) if t[1]
                                                                 else ""))


def _multiples(m: int | float, lo: int | None, lo_excl: bool, hi: int | None, hi_excl: bool
               ) -> st.SearchStrategy[int | float]:
    f = Fraction(m)
    kmin = kmax = None
    if lo is not None:
        kmin = math.ceil(Fraction(lo) / f)
        kmin += 1 if lo_excl and kmin * f == lo else 0
    if hi is not None:
        kmax = math.floor(Fraction(hi) / f)
        kmax -= 1 if hi_excl and kmax * f == hi else 0
    kmin = -(10**6) if kmin is None else kmin
    kmax = 10**6 if kmax is None else kmax
    return st.integers(kmin, kmax).map(lambda k: k * m)


@st.composite
def _numeric(draw: Any, kind: str) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    decl: dict[str, Any] = {"type": kind}
    lo = draw(st.none() | st.integers(-1000, 1000))
    hi = None if draw(st.booleans()) else (lo if lo is not None else draw(st.integers(-1000, 1000))) + \
        draw(st.integers(20, 2000))
    lo_excl, hi_excl = draw(st.booleans()), draw(st.booleans())
    if lo is not None:
        decl["exclusive_minimum" if lo_excl else "minimum"] = lo
    if hi is not None:
        decl["exclusive_maximum" if hi_excl else "maximum"] = hi
    m = draw(st.none() | (st.integers(1, 7) if kind == "integer" else st.sampled_from([0.5, 0.25, 2, 3])))
    if m is not None:
        decl["multiple_of"] = m
        return decl, _multiples(m, lo, lo_excl, hi, hi_excl)
    if kind == "integer":
        lo_in = None if lo is None else lo + int(lo_excl)
        hi_in = None if hi is None else hi - int(hi_excl)
        ints = st.integers(lo_in, hi_in)
        # JSON Schema: 3.0 is an integer too.
        return decl, ints | ints.filter(lambda v: abs(v) < 2**53).map(float)
    floats = st.floats(min_value=lo, max_value=hi, exclude_min=lo is not None and lo_excl,
                       exclude_max=hi is not None and hi_excl, allow_nan=False, allow_infinity=False)
    ints = st.integers(None if lo is None else lo + int(lo_excl), None if hi is None else hi - int(hi_excl))
    return decl, floats | ints


@st.composite
def _string(draw: Any) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    decl: dict[str, Any] = {"type": "string"}
    how = draw(st.sampled_from(["plain", "length", "format", "pattern"]))
    if how == "format":
        fmt = draw(st.sampled_from(["email", "uri", "date", "time", "date-time", "duration", "timestamp"]))
        decl["format"] = fmt
        return decl, _formatted(fmt)
    if how == "pattern":
        pattern = draw(st.sampled_from(PATTERNS))
        decl["pattern"] = pattern
        return decl, st.from_regex(pattern, fullmatch=True)
    if how == "length":
        lo = draw(st.integers(0, 5))
        hi = lo + draw(st.integers(0, 20))
        decl.update(min_length=lo, max_length=hi)
        return decl, st.text(min_size=lo, max_size=hi)
    return decl, st.text(max_size=40) | st.sampled_from(TRICKY_STRINGS)


@st.composite
def declarations(draw: Any, depth: int = 0) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    """A declared type (as written in yml) and a strategy for values that satisfy it."""
    kinds = ["string", "integer", "number", "boolean"] + (["array", "object"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    valid: st.SearchStrategy[Any]
    if kind == "string":
        decl, valid = draw(_string())
    elif kind in ("integer", "number"):
        decl, valid = draw(_numeric(kind))
    elif kind == "boolean":
        decl, valid = {"type": "boolean"}, st.booleans()
    elif kind == "array":
        decl = {"type": "array"}
        items: st.SearchStrategy[Any] = json_values
        if draw(st.booleans()):
            item_decl, items = draw(declarations(depth + 1))
            decl["items"] = item_decl
        unique = draw(st.booleans())
        lo = draw(st.integers(0, 1 if unique else 2))
        hi = lo + draw(st.integers(0, 4))
        decl.update(min_items=lo, max_items=hi)
        if unique:
            decl["unique_items"] = True
        valid = st.lists(items, min_size=lo, max_size=hi, unique_by=_canon if unique else None)
    else:
        decl = {"type": "object"}
        names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))
        props = {n: draw(declarations(depth + 1)) for n in names}
        required = [n for n in names if draw(st.booleans())]
        extra = draw(st.sampled_from([None, True, False]))
        if props:
            decl["properties"] = {n: d for n, (d, _) in props.items()}
        if required:
            decl["required"] = required
        if extra is not None:
            decl["additional_properties"] = extra
        base = st.fixed_dictionaries({n: props[n][1] for n in required},
                                     optional={n: v for n, (_, v) in props.items() if n not in required})
        if extra is False:
            valid = base
        else:
            extras = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in props), json_values, max_size=2)
            valid = st.tuples(base, extras).map(lambda t: {**t[1], **t[0]})
    if kind in ("string", "integer", "number") and draw(st.integers(0, 3)) == 0:
        values = draw(st.lists(valid, min_size=1, max_size=4))
        decl["enum"] = values
        valid = st.sampled_from(values)
    if draw(st.integers(0, 4)) == 0:
        decl["nullable"] = True  # docs/endpoints.md: `true` also allows null
        valid = st.none() | valid
    if draw(st.integers(0, 3)) == 0:
        decl["description"] = draw(st.text(max_size=20))
    return decl, valid


class Valid:
    """The values that satisfy a declaration, as a strategy (shown short in a failing example)."""

    def __init__(self, strategy: st.SearchStrategy[Any]) -> None:
        self.strategy = strategy

    def __repr__(self) -> str:
        return "<valid values>"


@st.composite
def parameter_lists(draw: Any) -> list[tuple[dict[str, Any], Valid]]:
    """Parameters as declared in yml (some with a default, drawn from their valid values), with their values."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=4))
    out = []
    for name in names:
        decl, valid = draw(declarations())
        param = {"name": name, **decl}
        if draw(st.integers(0, 2)) == 0:
            param["default"] = draw(valid)
        out.append((param, Valid(valid)))
    return out


def _endpoint(params: list[dict[str, Any]]) -> Endpoint:
    """A tool with these parameters, as the registry builds it (its SQL never runs: there is no warehouse)."""
    spec = ToolSpec.model_validate({"name": "fuzzed", "parameters": params, "source": {"code": "select 1"}})
    return Endpoint(kind="tool", name="fuzzed", spec=spec, node_id="model.p.m", node_type="model", yml_path="m.yml",
                    source_kind="code", sql="select 1", parameters=tuple(spec.parameters), declared_return=None,
                    relations=())


def _call(endpoint: Endpoint, arguments: Any, user: Any = None) -> CallError:
    """The CallError a call ends with (warehouse None: arguments that pass end in 'no warehouse to query').

    Any other exception propagates and fails the property.
    """
    pipeline = Pipeline(Registry((endpoint,)), None)
    try:
        pipeline.call(endpoint, arguments, user)
    except CallError as exc:
        return exc
    raise AssertionError("a call without a warehouse returned")


def _accepted(error: CallError) -> bool:
    return error.kind == "execution" and str(error) == "no warehouse to query"


BOUND = {"name": "tenant", "type": "string", "bind": "user.claims.tenant"}


def test_valid_arguments_are_always_accepted(scale: Scale) -> None:
    @_settings(scale, 300, 5000)
    @given(params=parameter_lists(), data=st.data(), bind=st.booleans())
    def check(params: list[tuple[dict[str, Any], Valid]], data: st.DataObject, bind: bool) -> None:
        declared = [p for p, _ in params] + ([BOUND] if bind else [])
        endpoint = _endpoint(declared)  # a type generated to be valid parses
        arguments = {}
        for param, valid in params:
            if "default" not in param or data.draw(st.booleans()):
                arguments[param["name"]] = data.draw(valid.strategy, label=param["name"])
        user = {"claims": {"tenant": data.draw(st.text(max_size=10), label="tenant")}} if bind else None
        error = _call(endpoint, arguments, user)
        assert _accepted(error), f"{error.kind}: {error}"

    check()


def test_any_arguments_get_the_package_error_or_pass(scale: Scale) -> None:
    extra = st.dictionaries(st.sampled_from(["tenant", "sql"]) | st.text(max_size=6), json_values, max_size=2)
    users = st.none() | st.fixed_dictionaries({}, optional={"claims": st.dictionaries(
        st.sampled_from(["tenant", "x"]), json_values, max_size=2), "role": json_values})

    @_settings(scale, 300, 5000)
    @given(params=parameter_lists(), bind=st.booleans(), data=st.data(), user=users)
    def check(params: list[tuple[dict[str, Any], Valid]], bind: bool, data: st.DataObject, user: Any) -> None:
        endpoint = _endpoint([p for p, _ in params] + ([BOUND] if bind else []))
        # Per parameter: a valid value, a near one (huge, odd, or a valid one inside garbage), any JSON, or none.
        arguments: Any = {}
        for param, valid in params:
            how = data.draw(st.sampled_from(["valid", "odd", "json", "absent"]), label=f"{param['name']} is")
            if how == "valid":
                arguments[param["name"]] = data.draw(valid.strategy)
            elif how == "odd":  # NaN and infinities: Python's json module (and the SDK's parser) read them
                arguments[param["name"]] = data.draw(huge_ints | st.sampled_from(NONFINITE)
                                                     | st.sampled_from([*ODD_FLOATS, *TRICKY_STRINGS])
                                                     | st.lists(valid.strategy, max_size=2)
                                                     | st.dictionaries(st.sampled_from(NAMES), valid.strategy))
            elif how == "json":
                arguments[param["name"]] = data.draw(json_values)
        arguments.update(data.draw(extra, label="extra arguments") if data.draw(st.booleans()) else {})
        if data.draw(st.integers(0, 9)) == 0:
            arguments = data.draw(json_values, label="arguments")  # not even an object, mostly
        error = _call(endpoint, arguments, user)
        assert error.kind in ("invalid_arguments", "denied", "execution"), f"{error.kind}: {error}"
        if error.kind == "execution":
            assert _accepted(error), str(error)
            assert isinstance(arguments, dict) and not (bind and "tenant" in arguments)
            json.dumps(arguments, allow_nan=False)  # what passes is a value JSON can carry (NaN passes any bound)
        if error.kind == "invalid_arguments":
            assert str(error) and "Traceback" not in str(error)

    check()


EXTREMES = [10**400, -(10**400), 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324, -0.0, 0.5, 1.5, 2**53 + 1]


def test_extreme_numbers_against_numeric_declarations(scale: Scale) -> None:
    """Bounds and multiple_of (integer and fractional) against numbers at the ends of JSON's range."""
    kinds = st.sampled_from(["integer", "number"]).flatmap(_numeric).map(lambda d: d[0])

    @_settings(scale, 200, 3000)
    @given(decl=kinds, value=st.sampled_from([*EXTREMES, *NONFINITE]))
    def check(decl: dict[str, Any], value: Any) -> None:
        error = _call(_endpoint([{"name": "n", **decl}]), {"n": value})
        assert error.kind in ("invalid_arguments", "execution"), f"{error.kind}: {error}"
        if _accepted(error):
            assert not isinstance(value, float) or math.isfinite(value), f"{value} passed {decl}"  # NaN: no bound holds

    check()


def test_text_values_parse_or_raise_value_error(scale: Scale) -> None:
    """`--param`, URI variables and prompt arguments arrive as text: converted by the type, or a ValueError."""
    texts = (st.text(max_size=40) | st.sampled_from(TRICKY_STRINGS) | json_values.map(json.dumps)
             | st.integers(1, 200_000).map(lambda n: "[" * n) | st.integers(1, 6000).map(lambda n: "9" * n)
             | st.sampled_from(["nan", "inf", "-Infinity", "1e400", "[1, NaN]", '{"a": -Infinity}']))

    @_settings(scale, 300, 5000)
    @given(decl=declarations().map(lambda d: d[0]), text=texts)
    def check(decl: dict[str, Any], text: str) -> None:
        endpoint = _endpoint([{"name": "p", **decl}])
        try:
            value = parse_text_value(endpoint.parameters[0], text)
        except ValueError as exc:
            assert str(exc)
            return
        error = _call(endpoint, {"p": value})
        assert error.kind in ("invalid_arguments", "execution"), f"{error.kind}: {error}"
        if _accepted(error):
            json.dumps(value, allow_nan=False)  # what passes is a value JSON can carry (no NaN, no infinity)

    check()


# ---- meta-block parsing ------------------------------------------------------------------------------

CONDITIONS = ["user.role != 'admin'", "!('hr' in user.groups)", "!has(user.claims.tenant)", "true", "false",
              "user.role ==", "size(response) > 50", "id > 3 && user.role != 'analyst'", "1 +", "''", "[[[",
              "(" * 40 + "true" + ")" * 40, "response.all(r, r.id > 0)", "user.claims.x.y.z == 1"]


def _mutate(draw: Any, value: Any, depth: int = 0) -> Any:
    """`value` with a few keys dropped, replaced by garbage, or added; lists and dicts walked into."""
    if isinstance(value, dict) and value:
        out = dict(value)
        for key in draw(st.lists(st.sampled_from(sorted(out)), max_size=2, unique=True)):
            how = draw(st.sampled_from(["drop", "garbage", "walk", "walk"]))
            if how == "drop":
                del out[key]
            elif how == "garbage":
                out[key] = draw(json_values)
            else:
                out[key] = _mutate(draw, out[key], depth + 1)
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.sampled_from(["nme", "paramters", "sorce", "x"]))] = draw(json_values)
        return out
    if isinstance(value, list) and value and depth < 4:
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(draw, value[i], depth + 1), *value[i + 1:]]
    return value if draw(st.integers(0, 3)) else draw(json_values)


@st.composite
def meta_blocks(draw: Any) -> Any:
    """A `config.meta.mxcp` block: a valid one mutated a little, or garbage."""
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values)
    params = [p for p, _ in draw(parameter_lists())]
    names = [p["name"] for p in params]
    if draw(st.integers(0, 3)) == 0:  # a keyword with a value JSON Schema forbids, on a number
        params[0] = {"name": params[0]["name"], "type": "number",
                     draw(st.sampled_from(["multiple_of", "minimum", "max_length"])):
                     draw(st.sampled_from([0, 0.0, -2, 1e-320, "1", None]))}
    code = "select " + (", ".join(f"${n} as {n}" for n in names) or "1")
    tool: dict[str, Any] = {"name": draw(st.sampled_from(["t1", "get_x"]) | st.text(max_size=8)),
                            "description": draw(st.text(max_size=20)), "parameters": params,
                            "source": draw(st.sampled_from([{"code": code}, {"code": "select * from {{ ref('m') }}"},
                                                            {"file": "missing.sql"}, {"file": "a\x00b.sql"},
                                                            {"code": code, "file": "x.sql"}]))}
    if draw(st.booleans()):
        tool["return"] = draw(declarations())[0]
    if draw(st.booleans()):
        tool["policies"] = {
            "input": [{"condition": draw(st.sampled_from(CONDITIONS) | st.text(max_size=30)), "action": "deny",
                       "reason": "no"}],
            "output": [{"condition": draw(st.sampled_from(CONDITIONS)),
                        "action": draw(st.sampled_from(["mask_fields", "filter_fields", "filter_sensitive_fields"])),
                        "fields": ["a"]}]}
    if draw(st.booleans()):
        tool["tests"] = [{"name": "t", "arguments": {n: 1 for n in names}, "result_length": 1}]
    for key, values in (("access", ["read", "write"]), ("enabled", [True, False]), ("max_rows", [1, 0, -1]),
                        ("timeout", [0.5, 0]), ("annotations", [{"readOnlyHint": True}, {"bogus": 1}])):
        if draw(st.integers(0, 3)) == 0:
            tool[key] = draw(st.sampled_from(values))
    uri = draw(st.sampled_from(["people://{id}", "x://{a}/{b}", "static://all", "x://{a}{a}", "x://{", "{a}",
                                "p://{1a}"]) | st.text(max_size=12))
    resource = {"uri": uri, "source": {"code": "select " + ", ".join(f"${v}" for v in re.findall(r"{(\w+)}", uri))
                                       if "{" in uri else "select 1"}}
    prompt = {"name": draw(st.sampled_from(["p1"]) | st.text(max_size=8)),
              "parameters": [{"name": "who", "type": "string"}],
              "messages": [{"role": draw(st.sampled_from(["user", "system", "tool"])),
                            "prompt": draw(st.sampled_from(["hi {{ who }}", "{{ who ", "{% if %}", "{{ who }}"
                                                            + "{{ (" * 50]) | st.text(max_size=20))}]}
    block = {"tools": [tool], "resources": [resource] if draw(st.booleans()) else [],
             "prompts": [prompt] if draw(st.booleans()) else []}
    return _mutate(draw, block) if draw(st.booleans()) else block


def _manifest(block: Any, column_meta: Any) -> Manifest:
    node = {"unique_id": "model.p.m", "name": "m", "resource_type": "model", "package_name": "p",
            "relation_name": '"db"."main"."m"', "patch_path": "p://models/m.yml",
            "config": {"materialized": "table", "meta": {"mxcp": block}},
            "columns": {"id": {"name": "id", "data_type": "integer"}, "a": {"name": "a", "data_type": "varchar"},
                        "team": {"name": "team", "data_type": "varchar", "config": {"meta": {"mxcp": column_meta}}}}}
    return Manifest({"metadata": {"project_name": "p"}, "nodes": {"model.p.m": node}, "sources": {}, "exposures": {}})


def test_meta_blocks_parse_or_give_named_problems(scale: Scale, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    column_meta = st.none() | st.just({"sensitive": True}) | json_values
    values = json_values | st.integers(-5, 5) | st.floats(-10, 10)

    @_settings(scale, 300, 5000)
    @given(block=meta_blocks(), column=column_meta, args=st.dictionaries(st.sampled_from(NAMES), values))
    def check(block: Any, column: Any, args: dict[str, Any]) -> None:
        # The models: each raises pydantic's ValidationError (a ValueError) or parses.
        for model, raw in [(MxcpBlock, block), *[(m, item) for key, m in (("tools", ToolSpec), ("resources",
                           ResourceSpec), ("prompts", PromptSpec)) if isinstance(block, dict)
                           and isinstance(block.get(key), list) for item in block[key]]]:
            try:
                model.model_validate(raw)
            except ValueError as exc:
                assert type(exc).__name__ == "ValidationError", repr(exc)
                assert format_validation_error(exc)  # type: ignore[arg-type]
        # The registry build: never raises; each problem names file, node and what is wrong.
        registry, problems = build_registry(_manifest(block, column), tmp_path)
        for problem in problems:
            assert isinstance(problem, EndpointProblem) and problem.file == "models/m.yml"
            assert problem.node == "model.p.m" and problem.message and "Traceback" not in problem.message
        if problems:
            assert "mxcp endpoint declarations" in str(RegistryError(problems))
        # What it accepted can be listed and called: schemas build, arguments get clean errors.
        pipeline = Pipeline(registry, None)
        for endpoint in registry.all():
            if endpoint.kind == "tool":
                tool_of(endpoint)
                output_schema(endpoint)
            SchemaChecker(endpoint.input_schema()).problems(args)
            for arguments in (args, {p.name: 1.5 for p in endpoint.client_parameters}):
                try:
                    pipeline.call(endpoint, arguments, None)
                except CallError as exc:
                    assert exc.kind in ("invalid_arguments", "execution", "denied", "policy_error"), exc

    check()


# ---- CEL policy inputs --------------------------------------------------------------------------------

GROUPS = ["hr", "hr", "export", "export", "staff", "admin", "HR", "hr "]  # repeats: drawn more often
I64 = st.integers(-(2**63), 2**63 - 1)
cel_scalars = st.none() | st.booleans() | I64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
cel_values = st.recursive(cel_scalars, lambda kids: st.lists(kids, max_size=3)
                          | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)


def _users(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Users as authentication hands them over (see auth.tokens.user_from_claims): standard fields, any claims."""
    return st.fixed_dictionaries({}, optional={
        "id": values, "email": values,
        "role": st.sampled_from(["admin", "admin", "analyst", "analyst", "anonymous", "Admin", ""]) | values,
        "groups": st.lists(st.sampled_from(GROUPS) | values, max_size=4),
        "scopes": st.lists(st.text(max_size=5), max_size=2),
        "claims": st.dictionaries(st.sampled_from(["tenant", "region", "x"]) | st.text(max_size=5),
                                  st.sampled_from(["eu", "eu", "us", "acme"]) | values, max_size=3)})


# Outcomes of a CEL (sub)expression, as the sets of what a conforming engine may give: True, False, or
# ERR (an evaluation error). Where the spec leaves room (heterogeneous equality, cross-type numeric
# comparison, error absorption by && and ||) both are allowed; a rule allows a call only on False (deny
# rules) and an ERR must deny.
ERR = "error"


def _eq(value: Any, text: str) -> set[Any]:
    return {value == text} if isinstance(value, str) else {False, ERR}


def _not(outcomes: set[Any]) -> set[Any]:
    return {ERR if o == ERR else not o for o in outcomes}


def _and(left: set[Any], right: set[Any]) -> set[Any]:
    out: set[Any] = set()
    for a in left:
        for b in right:
            if a is False:
                out.add(False)
            elif a is True:
                out.add(b)
            else:
                out |= {False, ERR} if b is False else {ERR}
    return out


def _or(left: set[Any], right: set[Any]) -> set[Any]:
    return _not(_and(_not(left), _not(right)))


def _contains(items: list[Any], text: str) -> set[Any]:
    found = text in [i for i in items if isinstance(i, str)]
    return {found} if all(isinstance(i, str) for i in items) else {found, ERR}


def _gt(value: Any, bound: int) -> set[Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value > bound}
    if isinstance(value, float):
        return {value > bound, ERR}
    return {ERR}


def _has(mapping: dict[str, Any], key: str) -> set[Any]:
    return {key in mapping}


# (where the rule is used, condition, phase, oracle(user as make_user gives it, arguments, response))
Oracle = Callable[[dict[str, Any], dict[str, Any], Any], set[Any]]
RULES: list[tuple[str, str, str, Oracle]] = [
    ("integration_tests people_enriched (output)", "user.role != 'admin'", "output",
     lambda u, a, r: _not(_eq(u["role"], "admin"))),
    ("integration_tests salary_band (input)", "!('hr' in user.groups)", "input",
     lambda u, a, r: _not(_contains(u["groups"], "hr"))),
    ("docs/policies.md (input)", "!has(user.claims.tenant)", "input",
     lambda u, a, r: _not(_has(u["claims"], "tenant"))),
    ("docs/policies.md (input)", "!has(user.claims.region) || user.claims.region != 'eu'", "input",
     lambda u, a, r: _or(_not(_has(u["claims"], "region")),
                         _not(_eq(u["claims"].get("region"), "eu")) if "region" in u["claims"] else {ERR})),
    ("docs/policies.md (input)", "limit > 100 && user.role != 'analyst'", "input",
     lambda u, a, r: _and(_gt(a.get("limit"), 100) if "limit" in a else {ERR}, _not(_eq(u["role"], "analyst")))),
    ("docs/policies.md (output)", "size(response) > 50 && !('export' in user.groups)", "output",
     lambda u, a, r: _and({len(r) > 50}, _not(_contains(u["groups"], "export")))),
]


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "email": f"p{i}@example.com"} for i in range(n)]


@pytest.mark.parametrize("where, condition, phase, oracle", RULES, ids=[r[1] for r in RULES])
def test_policies_decide_or_fail_closed(scale: Scale, where: str, condition: str, phase: str,
                                        oracle: Oracle) -> None:
    action = "deny" if phase == "input" or "response" in condition else "mask_fields"
    compiled = compile_rules([PolicyRule.model_validate(
        {"condition": condition, "action": action, "reason": "no", **({"fields": ["email"]}
                                                                       if action == "mask_fields" else {})})], phase)

    @_settings(scale, 200, 4000)
    @given(raw=_users(cel_values), limit=st.none() | st.integers(0, 200) | cel_values,
           rows=st.sampled_from([0, 50, 51]) | st.integers(0, 60))
    def check(raw: dict[str, Any], limit: Any, rows: int) -> None:
        user = make_user(raw)
        arguments = {} if limit is None else {"limit": limit}
        response = _rows(rows)
        expected = oracle(user, arguments, response)  # of the condition: True applies the action
        decisions: list[Decision] = []
        outcome: Any
        try:
            if phase == "input":
                check_input(compiled, activation(user, arguments), decisions)
            else:
                variables = activation(user, arguments, response, with_response=True)
                result = apply_output(compiled, variables, response, (), decisions)
        except CallError as exc:
            assert exc.kind in ("denied", "policy_error"), exc
            assert (exc.kind == "policy_error") == (decisions[-1].error is not None), decisions
            outcome = ERR if exc.kind == "policy_error" else True
        else:
            assert decisions[-1].error is None and isinstance(decisions[-1].matched, bool), decisions
            outcome = decisions[-1].matched
            assert phase == "output" or outcome is False, decisions  # a matched input deny rule raises
            if phase == "output":
                # Masked exactly when the rule matched: never an unmasked row after an error or a match.
                assert result == ([{**r, "email": "****"} for r in response] if outcome else response), result
        assert outcome in expected, (f"{where}: {condition!r} gave {outcome} for user={user} arguments={arguments} "
                                     f"rows={rows}; expected one of {expected}")
        if phase == "input" and "limit" not in condition:
            # tools/list hides what a user-only rule denies: the same decision.
            assert denies_caller(compiled, user) == (outcome is not False)

    check()


def _outside_i64(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_outside_i64(v) for v in value.values())
    if isinstance(value, list):
        return any(_outside_i64(v) for v in value)
    return isinstance(value, int) and not -(2**63) <= value < 2**63


def test_users_written_by_hand_decide_or_fail_closed(scale: Scale) -> None:
    """A `user` written by hand (`run --user`, `auth.stdio_user`, an API key's user, a test's user_context) is any
    JSON object: it becomes a well-formed caller, and a scalar `groups` is one group, as a token's claim is."""
    salary_band = compile_rules([PolicyRule.model_validate(
        {"condition": "!('hr' in user.groups)", "action": "deny", "reason": "HR only"})], "input")
    raw_users = st.dictionaries(st.sampled_from(["id", "email", "name", "role", "groups", "scopes", "claims", "team"])
                                | st.text(max_size=5), st.sampled_from(["hr", "admin"]) | json_values, max_size=5)

    @_settings(scale, 200, 4000)
    @given(raw=raw_users)
    def check(raw: dict[str, Any]) -> None:
        user = make_user(raw)
        assert isinstance(user["groups"], list) and isinstance(user["scopes"], list)
        assert isinstance(user["claims"], dict) and user["role"]
        decisions: list[Decision] = []
        try:
            check_input(salary_band, activation(user, {}), decisions)
            allowed = True
        except CallError as exc:
            assert exc.kind in ("denied", "policy_error"), exc
            allowed = False
        groups = raw.get("groups")
        expected = "hr" in groups if isinstance(groups, list) else groups == "hr"
        mixed = isinstance(groups, list) and not all(isinstance(g, str) for g in groups)
        # Exact, except that the engine may err on a list of mixed types or on a number it cannot hold (the
        # whole user is converted for CEL), and an error denies.
        assert allowed == expected or ((mixed or _outside_i64(raw)) and not allowed), (raw, user)

    check()


def _repo_rules() -> list[tuple[str, dict[str, Any]]]:
    """Every policy rule written in the yml of integration_tests/ and examples/: (phase, rule)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    def walk(node: Any, phase: str | None) -> None:
        if isinstance(node, dict):
            if phase and isinstance(node.get("condition"), str) and isinstance(node.get("action"), str):
                found[json.dumps([phase, node], sort_keys=True, default=str)] = (phase, node)
            for key, value in node.items():
                walk(value, key if key in ("input", "output") else None)
        elif isinstance(node, list):
            for value in node:
                walk(value, phase)

    for root in ("integration_tests", "examples"):
        for path in sorted((REPO / root).rglob("*.yml")):
            if "dbt_packages" in path.parts or "target" in path.parts:
                continue
            with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError):
                walk(yaml.safe_load(path.read_text(encoding="utf-8")), None)
    return list(found.values())


def test_every_repo_policy_decides_or_fails_closed(scale: Scale) -> None:
    """Each rule of the repo's projects, in its phase, on any caller, arguments and result: it decides, or it
    errs and the call is refused; a rule that matched left no unmasked or unfiltered field behind."""
    rules = [(phase, rule, compile_rules([PolicyRule.model_validate(rule)], phase)) for phase, rule in _repo_rules()]
    assert {phase for phase, _, _ in rules} == {"input", "output"}, rules
    args = st.dictionaries(st.sampled_from(["limit", "id", "team", "tenant", "customer_id", "q"]), json_values,
                           max_size=4)
    rows = st.lists(st.dictionaries(st.sampled_from(["id", "email", "total", "ssn"]), json_values, max_size=4),
                    max_size=4)

    @_settings(scale, 150, 3000)
    @given(raw=_users(json_values), arguments=args, response=rows | json_values)
    def check(raw: dict[str, Any], arguments: dict[str, Any], response: Any) -> None:
        user = make_user(raw)
        variables = activation(user, arguments, response, with_response=True)
        for phase, rule, compiled in rules:
            decisions: list[Decision] = []
            try:
                if phase == "input":
                    check_input(compiled, variables, decisions)
                else:
                    result = apply_output(compiled, variables, response, ("email",), decisions)
            except CallError as exc:
                assert exc.kind in ("denied", "policy_error"), exc
                assert (exc.kind == "policy_error") == (decisions[-1].error is not None), (rule, decisions)
                continue
            decision = decisions[-1]
            assert decision.error is None and isinstance(decision.matched, bool), (rule, decisions)
            if phase == "input" or not decision.matched or rule["action"] == "deny":
                assert not decision.matched or phase == "output", (rule, decisions)
                continue
            fields = rule.get("fields") or ["email"]
            for row in (result if isinstance(result, list) else [result]):
                for field in fields:
                    if isinstance(row, dict) and "." not in field:
                        assert row.get(field, "****") == "****", (rule, row)  # masked or gone

    check()


# ---- malformed JSON-RPC frames against a served process ---------------------------------------------------

INIT = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/read", "resources/list", "prompts/get",
           "completion/complete", "notifications/initialized", "notifications/cancelled", "server/discover",
           "logging/setLevel", "no/such", "", "rpc.discover"]
ids = (st.none() | st.integers(-100, 100) | huge_ints | st.floats(allow_nan=False)
       | st.text(max_size=10) | st.just("x" * 20_000) | st.booleans() | st.lists(st.integers(), max_size=2)
       | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


# integration_tests' tools: for each argument, values near the declared type, and any JSON.
TOOL_ARGUMENTS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "get_person": {"id": st.integers(-5, 20) | huge_ints | json_values},
    "count_people": {"team": st.sampled_from(["eng", "sales", "marketing", ""]) | json_values,
                     "include_inactive": st.booleans() | json_values},
    "search_people": {"name_query": st.sampled_from(["a", "ann", "%", "'"]) | st.text(max_size=60) | json_values,
                      "teams": st.lists(st.sampled_from(["eng", "hr", "x"]), max_size=6) | json_values,
                      "limit": st.integers(-1, 200) | json_values, "active_only": st.booleans() | json_values,
                      "min_salary": st.floats(allow_nan=False, allow_infinity=False) | json_values},
    "people_joined_since": {"since": st.dates().map(dt.date.isoformat) | st.sampled_from(TRICKY_STRINGS)
                            | json_values},
    "teams_on_floor": {"floor": st.integers(-1, 5) | json_values},
}


def _nested(n: int) -> bytes:
    return b"[" * n + b"]" * n


@st.composite
def frames(draw: Any) -> bytes:
    """One malformed (or odd) JSON-RPC frame, as bytes without a newline."""
    how = draw(st.sampled_from(["bytes", "truncated", "shape", "shape", "call", "call", "call", "nested", "batch",
                                "nonfinite"]))
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "nonfinite":  # JSON has no NaN or Infinity; Python's json module reads them
        value = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 5000]))
        where = draw(st.sampled_from([b'{"name": "search_people", "arguments": {"name_query": "a", "min_salary": %s}}',
                                      b'{"name": "get_person", "arguments": {"id": %s}}']))
        return b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": ' + where % value + b"}"
    if how == "nested":
        n = draw(st.sampled_from([10, 500, 5_000, 100_000]))
        inner = _nested(n)
        return inner if draw(st.booleans()) else \
            b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": ' + inner + b"}"
    if how == "batch":
        return json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(draw(st.integers(0, 3)))]
                          ).encode()
    message: dict[str, Any] = {}
    if draw(st.integers(0, 4)):
        message["jsonrpc"] = draw(st.just("2.0") | json_values)
    if draw(st.integers(0, 3)):
        message["id"] = draw(ids)
    message["method"] = draw(st.sampled_from(METHODS) | json_values)
    if how == "call":  # a well-formed call of a real tool (mostly) with fuzzed arguments: its SQL runs
        name = draw(st.sampled_from([*TOOL_ARGUMENTS, "no_such", ""]))
        declared = TOOL_ARGUMENTS.get(name, {"x": json_values})
        arguments = st.fixed_dictionaries(declared) | st.fixed_dictionaries({}, optional=declared)
        message.update(jsonrpc="2.0", id=draw(st.integers(0, 10**6) | st.text(min_size=1, max_size=5) | ids),
                       method="tools/call", params={"name": name, "arguments": draw(arguments | json_values)})
    elif draw(st.booleans()):
        message["params"] = draw(json_values)
    text = json.dumps(message).encode()
    if how == "truncated":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    return text


class StdioServer:
    """`dbt-mxcp serve` over stdio, spoken to line by line; stdout and stderr drained by threads."""

    def __init__(self, project: Project) -> None:
        self.proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--project-dir", str(project.path),
                                      "--profiles-dir", str(project.path)], env=env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()
        self.probes = 0

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in iter(stream.readline, b""):
            (self.stdout if is_stdout else self.stderr).append(line)
            if is_stdout:
                self.lines.put(line)

    def send(self, frame: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame + b"\n")
        self.proc.stdin.flush()

    def request(self, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send `message` and wait (up to `timeout`) for the answer with its id; every line must be JSON."""
        self.send(json.dumps(message).encode())
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no answer to {message.get('method')} (exit code {self.proc.poll()}); "
                                     f"stderr: {b''.join(self.stderr[-20:]).decode(errors='replace')}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            answer = json.loads(line)  # stdout carries JSON-RPC only
            assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", line[:300]
            error = answer.get("error") or {"code": -1}
            # No handler raised: the SDK answers that with code 0 and the exception's text, or "Internal error".
            assert isinstance(error.get("code"), int) and error["code"] < 0 and error.get("message") not in INTERNAL, \
                answer
            if answer.get("id") == message["id"]:
                return answer

    def probe(self) -> None:
        self.probes += 1
        answer = self.request({"jsonrpc": "2.0", "id": f"mxcp-fuzz-probe-{self.probes}", "method": "ping"})
        assert answer.get("result") == {}, answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def stdio_server(it_project: Project) -> Iterator[StdioServer]:
    server = StdioServer(it_project)
    try:
        yield server
    finally:
        server.close()


def test_stdio_survives_malformed_frames(stdio_server: StdioServer, scale: Scale) -> None:
    server = stdio_server
    assert "result" in server.request(INIT, timeout=60)
    server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())

    @_settings(scale, 300, 5000)
    @given(frame=frames())
    def check(frame: bytes) -> None:
        server.send(frame.replace(b"\n", b" ").replace(b"\r", b" "))
        server.probe()  # answered: the server neither died nor hung on the frame

    check()
    call = server.request({"jsonrpc": "2.0", "id": "final", "method": "tools/call",
                           "params": {"name": "get_person", "arguments": {"id": 1}}})
    assert call["result"]["structuredContent"]["name"] == "Ann", call
    assert server.proc.poll() is None
    stderr = b"".join(server.stderr).decode(errors="replace")
    assert "Traceback" not in stderr, stderr[-5000:]


@pytest.fixture
def http_server(it_project: Project, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`dbt-mxcp serve --transport http`: its base URL, process, and the file its stderr goes to."""
    port = free_port()
    log = tmp_path / "serve.stderr"
    with log.open("w") as err:
        proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--transport", "http", "--port", str(port),
                                 "--project-dir", str(it_project.path), "--profiles-dir", str(it_project.path)],
                                env=env(), stdout=subprocess.DEVNULL, stderr=err, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", proc)
        yield base, proc, log
    finally:
        stop(proc)


INTERNAL = ("Internal server error", "Internal error")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _messages(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages of a response: a JSON body, or the data of each SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # SSE lines end at CR, LF or CRLF only (str.splitlines would also split at U+0085 or U+2028 in the data).
        return [json.loads(line[5:]) for line in re.split(r"\r\n|\r|\n", response.text) if line.startswith("data:")
                and line[5:].strip()]
    return [response.json()] if response.content else []


def _is_notification(frame: bytes) -> bool:
    """Whether the SDK reads `frame` as a notification (answered 202, no body): a JSON-RPC 2.0 object with a
    string method and no usable request id. MCP wants a string or an integer; the SDK takes a message with any
    other id (null, 1.0, a list) for a notification and, as it knows no such one, drops it unanswered."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    if not (isinstance(message, dict) and message.get("jsonrpc") == "2.0" and isinstance(message.get("method"), str)):
        return False
    request_id = message.get("id")
    return not (isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool)))


MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}


def _modern(frame: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A 2026-07-28 request carries its envelope (params._meta) and its method and name as headers too: add
    them where the frame has a place for them, so that the frame gets past the envelope check to the server."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return frame, headers
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return frame, headers
    headers = dict(headers)
    if message["method"].isascii() and message["method"].isprintable():
        headers["Mcp-Method"] = message["method"]
    params = message.setdefault("params", {})
    if isinstance(params, dict):
        params.setdefault("_meta", MODERN_META)
        if isinstance(params.get("name"), str) and params["name"].isascii() and params["name"].isprintable():
            headers["Mcp-Name"] = params["name"]
    return json.dumps(message).encode(), headers


def test_http_answers_malformed_frames_cleanly(http_server: tuple[str, subprocess.Popen[str], Path],
                                               scale: Scale) -> None:
    base, proc, log = http_server
    with httpx2.Client(timeout=30) as http:
        opened = http.post(f"{base}/mcp", json=INIT, headers=HEADERS)
        assert opened.status_code == 200, opened.text
        legacy = {**HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        http.post(f"{base}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=legacy)
        modern = {**HEADERS, "MCP-Protocol-Version": "2026-07-28"}
        seen: dict[int, int] = {}

        @_settings(scale, 300, 5000)
        @given(frame=frames(), era=st.sampled_from(["legacy", "modern", "none"]))
        def check(frame: bytes, era: str) -> None:
            headers = {"legacy": legacy, "modern": modern, "none": HEADERS}[era]
            if era == "modern":
                frame, headers = _modern(frame, headers)
            response = http.post(f"{base}/mcp", content=frame, headers=headers)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (response.status_code, response.text[:500])
            if response.status_code == 202:
                assert _is_notification(frame), (frame[:300], response.text[:300])
                return
            messages = _messages(response)
            if response.status_code >= 400:
                # A clean refusal: a JSON-RPC error object, not a traceback or an HTML page.
                assert messages and all("error" in m for m in messages), (response.status_code, response.text[:500])
            else:
                assert response.status_code == 200 and messages, (response.status_code, response.text[:500])
                assert all(isinstance(m, dict) and ("error" in m or "result" in m) for m in messages), messages
            for m in messages:
                if "error" in m:
                    assert isinstance(m["error"].get("code"), int) and isinstance(m["error"].get("message"), str)
                    # What the SDK answers when a handler raised something unexpected (and logs its traceback):
                    # "Internal server error" (2026-07-28), or code 0 with the exception's text (2025-11-25).
                    assert m["error"]["code"] < 0 and m["error"]["message"] not in INTERNAL, (frame[:300], m)

        check()
        print("HTTP status codes of the malformed frames:", dict(sorted(seen.items())))
        assert proc.poll() is None
        stderr = log.read_text(errors="replace")
        assert "Traceback" not in stderr, stderr[-5000:]
        assert http.get(f"{base}/healthz").status_code == 200
        call = http.post(f"{base}/mcp", headers=legacy, json={"jsonrpc": "2.0", "id": "final", "method": "tools/call",
                                                             "params": {"name": "get_person", "arguments": {"id": 1}}})
        answers = _messages(call)
        assert answers and answers[-1]["result"]["structuredContent"]["name"] == "Ann", call.text[:500]
