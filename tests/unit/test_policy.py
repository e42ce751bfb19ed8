"""dbt_mxcp.policy: CEL rules compiled once, evaluated per call, failing closed."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from dbt_mxcp.endpoints import PolicyRule
from dbt_mxcp.errors import CallError
from dbt_mxcp.policy import (
    MASK,
    Decision,
    PolicySyntaxError,
    activation,
    apply_output,
    check_input,
    compile_rules,
)
from dbt_mxcp.policy_cost import COST_LIMIT, MAX_NESTING
from dbt_mxcp.user import make_user


def rule(condition: str, action: str = "deny", **kw: Any) -> PolicyRule:
    return PolicyRule(condition=condition, action=action, **kw)  # type: ignore[arg-type]


SUPPORT = make_user({"id": "u1", "email": "sam@corp.io", "groups": ["support"], "role": "agent"})
ADMIN = make_user({"id": "u0", "email": "root@corp.io", "role": "admin"})
NOBODY = make_user({})


def _deny(condition: str, user: dict[str, Any], arguments: dict[str, Any] | None = None) -> CallError | None:
    rules = compile_rules([rule(condition, reason="nope")], "input")
    try:
        check_input(rules, activation(user, arguments or {}), [])
    except CallError as exc:
        return exc
    return None


# ---- compiling ---------------------------------------------------------------------------------


def test_syntax_error_names_phase_and_index() -> None:
    rules = [rule("user.role == 'admin'"), rule("user.role == ")]
    with pytest.raises(PolicySyntaxError) as info:
        compile_rules(rules, "input")
    text = str(info.value)
    assert "input[1]" in text
    assert "user.role == " in text


def test_syntax_error_in_output_phase() -> None:
    with pytest.raises(PolicySyntaxError, match=r"output\[0\]"):
        compile_rules([rule("((", "mask_fields", fields=["email"])], "output")


def test_valid_rules_compile() -> None:
    compiled = compile_rules([rule("'support' in user.groups"), rule("size(user.scopes) == 0")], "input")
    assert len(compiled) == 2


# ---- input rules -------------------------------------------------------------------------------


def test_matching_input_rule_denies_with_its_reason() -> None:
    rules = compile_rules([rule("!('support' in user.groups)", reason="Support staff only")], "input")
    with pytest.raises(CallError) as info:
        check_input(rules, activation(NOBODY, {"query": "ali"}), [])
    assert info.value.kind == "denied"
    assert str(info.value) == "Support staff only"


def test_non_matching_input_rule_allows_and_records_a_decision() -> None:
    rules = compile_rules([rule("!('support' in user.groups)", reason="Support staff only")], "input")
    decisions: list[Decision] = []
    check_input(rules, activation(SUPPORT, {"query": "ali"}), decisions)
    assert len(decisions) == 1
    assert decisions[0].matched is False
    assert decisions[0].phase == "input"


def test_denial_without_reason_names_the_rule() -> None:
    rules = compile_rules([rule("true"), rule("true")], "input")
    with pytest.raises(CallError, match=r"input\[0\]"):
        check_input(rules, activation(NOBODY, {}), [])


def test_second_rule_can_deny() -> None:
    rules = compile_rules([rule("false", reason="first"), rule("true", reason="second")], "input")
    with pytest.raises(CallError, match="second"):
        check_input(rules, activation(NOBODY, {}), [])


def test_input_rule_sees_arguments_by_name() -> None:
    assert _deny("limit > 50 && user.role != 'admin'", SUPPORT, {"limit": 100}) is not None
    assert _deny("limit > 50 && user.role != 'admin'", SUPPORT, {"limit": 10}) is None
    assert _deny("limit > 50 && user.role != 'admin'", ADMIN, {"limit": 100}) is None


def test_input_rule_sees_decimal_and_date_arguments() -> None:
    import datetime as dt

    assert _deny("amount > 100.0", SUPPORT, {"amount": Decimal("100.50")}) is not None
    assert _deny("day == '2024-01-02'", SUPPORT, {"day": dt.date(2024, 1, 2)}) is not None


def test_mxcp_style_rules_work_for_an_anonymous_caller() -> None:
    # `user` always has the standard fields, so common MXCP rules evaluate (and here, deny).
    assert _deny("user.role != 'admin'", NOBODY).kind == "denied"  # type: ignore[union-attr]
    assert _deny("size(user.groups) == 0", NOBODY).kind == "denied"  # type: ignore[union-attr]


def test_has_guards_an_absent_claim() -> None:
    cond = "!(has(user.claims.tenant) && user.claims.tenant == 'acme')"
    assert _deny(cond, make_user({"tenant": "acme"})) is None
    assert _deny(cond, make_user({"tenant": "other"})).kind == "denied"  # type: ignore[union-attr]
    assert _deny(cond, NOBODY).kind == "denied"  # type: ignore[union-attr]


# ---- failing closed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "user"),
    [
        ("user.missing == 1", SUPPORT),
        ("user.claims.tenant == 'acme'", NOBODY),
        ("user.email.endsWith('x')", NOBODY),
        ("1", SUPPORT),
        ("'yes'", SUPPORT),
        ("1 / 0 == 1", SUPPORT),
        ("size(user.groups) / 0 > 1", SUPPORT),
    ],
)
def test_rule_that_cannot_be_evaluated_denies(condition: str, user: dict[str, Any]) -> None:
    err = _deny(condition, user)
    assert err is not None
    assert err.kind == "policy_error"
    assert "input[0]" in str(err)


def test_negated_erroring_rule_still_denies() -> None:
    # `!(error)` is still an error: it must not turn into "allow".
    err = _deny("!(user.missing == 1)", SUPPORT)
    assert err is not None
    assert err.kind == "policy_error"


def test_evaluation_error_is_recorded_as_a_decision() -> None:
    rules = compile_rules([rule("user.missing == 1")], "input")
    decisions: list[Decision] = []
    with pytest.raises(CallError):
        check_input(rules, activation(SUPPORT, {}), decisions)
    assert decisions[0].matched is None
    assert decisions[0].error


def test_output_rule_that_cannot_be_evaluated_denies_instead_of_leaving_fields_unmasked() -> None:
    rules = compile_rules([rule("user.missing == 1", "mask_fields", fields=["email"])], "output")
    rows = [{"id": 1, "email": "a@b.co"}]
    with pytest.raises(CallError) as info:
        apply_output(rules, activation(SUPPORT, {}, rows, with_response=True), rows, [], [])
    assert info.value.kind == "policy_error"
    assert "output[0]" in str(info.value)


# ---- output rules ------------------------------------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    return [
        {"id": 1, "email": "alice@x.io", "ssn": "111", "address": {"city": "Paris", "zip": "75001"}},
        {"id": 2, "email": "bob@x.io", "ssn": "222", "address": {"city": "Lyon", "zip": "69001"}},
    ]


def _output(rules: list[PolicyRule], result: Any, user: dict[str, Any] = SUPPORT,
            sensitive: list[str] | None = None) -> Any:
    compiled = compile_rules(rules, "output")
    return apply_output(compiled, activation(user, {}, result, with_response=True), result, sensitive or [], [])


def test_mask_fields_replaces_values_and_keeps_the_field() -> None:
    out = _output([rule("user.role != 'admin'", "mask_fields", fields=["email"])], _rows())
    assert out == [
        {"id": 1, "email": "****", "ssn": "111", "address": {"city": "Paris", "zip": "75001"}},
        {"id": 2, "email": "****", "ssn": "222", "address": {"city": "Lyon", "zip": "69001"}},
    ]


def test_output_rule_not_matching_leaves_the_result() -> None:
    out = _output([rule("user.role != 'admin'", "mask_fields", fields=["email"])], _rows(), user=ADMIN)
    assert out == _rows()


def test_filter_fields_drops_the_field() -> None:
    out = _output([rule("true", "filter_fields", fields=["ssn", "email"])], _rows())
    assert out == [
        {"id": 1, "address": {"city": "Paris", "zip": "75001"}},
        {"id": 2, "address": {"city": "Lyon", "zip": "69001"}},
    ]


def test_nested_paths() -> None:
    masked = _output([rule("true", "mask_fields", fields=["address.city"])], _rows())
    assert [r["address"] for r in masked] == [{"city": "****", "zip": "75001"}, {"city": "****", "zip": "69001"}]
    filtered = _output([rule("true", "filter_fields", fields=["address.zip"])], _rows())
    assert [r["address"] for r in filtered] == [{"city": "Paris"}, {"city": "Lyon"}]


def test_nested_path_through_a_list() -> None:
    result = {"id": 1, "orders": [{"no": "A", "card": "4111"}, {"no": "B", "card": "5500"}]}
    out = _output([rule("true", "mask_fields", fields=["orders.card"])], result)
    assert out == {"id": 1, "orders": [{"no": "A", "card": "****"}, {"no": "B", "card": "****"}]}


def test_mask_on_a_single_row() -> None:
    row = {"id": 1, "email": "alice@x.io", "address": {"city": "Paris"}}
    out = _output([rule("true", "mask_fields", fields=["email", "address.city"])], row)
    assert out == {"id": 1, "email": "****", "address": {"city": "****"}}


def test_masking_an_absent_field_does_not_add_it() -> None:
    out = _output([rule("true", "mask_fields", fields=["phone", "address.street"])], {"id": 1, "address": {}})
    assert out == {"id": 1, "address": {}}


def test_null_value_is_masked_too() -> None:
    out = _output([rule("true", "mask_fields", fields=["email"])], {"id": 1, "email": None})
    assert out == {"id": 1, "email": "****"}


def test_filter_sensitive_fields_uses_the_sensitive_paths() -> None:
    out = _output([rule("user.role != 'admin'", "filter_sensitive_fields")], _rows(),
                  sensitive=["ssn", "address.zip"])
    assert out == [
        {"id": 1, "email": "alice@x.io", "address": {"city": "Paris"}},
        {"id": 2, "email": "bob@x.io", "address": {"city": "Lyon"}},
    ]


def test_rules_apply_in_order() -> None:
    out = _output([rule("true", "mask_fields", fields=["email"]), rule("true", "filter_fields", fields=["ssn"])],
                  {"id": 1, "email": "a@b.co", "ssn": "1"})
    assert out == {"id": 1, "email": "****"}


def test_output_deny_rule_sees_the_response() -> None:
    rules = [rule("size(response) > 1", reason="too many rows")]
    with pytest.raises(CallError) as info:
        _output(rules, _rows())
    assert info.value.kind == "denied"
    assert str(info.value) == "too many rows"
    assert _output(rules, _rows()[:1]) == _rows()[:1]


def test_output_rule_reads_response_fields() -> None:
    out = _output([rule("response.id == 1", "mask_fields", fields=["email"])], {"id": 1, "email": "x@y.z"})
    assert out == {"id": 1, "email": "****"}
    out = _output([rule("response.id == 1", "mask_fields", fields=["email"])], {"id": 2, "email": "x@y.z"})
    assert out == {"id": 2, "email": "x@y.z"}


def test_the_input_result_is_not_mutated() -> None:
    rows = _rows()
    before = copy.deepcopy(rows)
    _output([rule("true", "mask_fields", fields=["email", "address.city"]),
             rule("true", "filter_fields", fields=["ssn"]),
             rule("true", "filter_sensitive_fields")], rows, sensitive=["address.zip"])
    assert rows == before


def test_output_decisions_recorded() -> None:
    compiled = compile_rules([rule("false", "mask_fields", fields=["email"]),
                              rule("true", "filter_fields", fields=["ssn"])], "output")
    decisions: list[Decision] = []
    apply_output(compiled, activation(SUPPORT, {}, _rows(), with_response=True), _rows(), [], decisions)
    assert [(d.phase, d.index, d.action, d.matched) for d in decisions] == [
        ("output", 0, "mask_fields", False),
        ("output", 1, "filter_fields", True),
    ]


@pytest.mark.parametrize("amount", [Decimal("100.50"), Decimal("100.00"), Decimal("7.25"), Decimal("7.00")])
def test_a_decimal_column_has_one_cel_type_whatever_its_digits(amount: Decimal) -> None:
    # DECIMAL(12,2) values from one column: a rule written for it must work for 100.00 as it does for 100.50
    # (a round value must not become a CEL int that `> 50.0` cannot compare, which denies the whole call).
    out = _output([rule("response.amount > 50.0", "mask_fields", fields=["amount"])], {"amount": amount})
    assert out == {"amount": "****" if amount > 50 else amount}


# ---- the cost bound ----------------------------------------------------------------------------


def _table(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "email": f"u{i}@x.io", "dept": f"d{i % 7}", "amount": float(i)} for i in range(n)]


DIGITS = "[0,1,2,3,4,5,6,7,8,9]"


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        # a comprehension over the response inside another: a million steps for 1,000 rows
        ("response.exists(a, response.exists(b, a.id != b.id && a.email == b.email))",
         "grows with the length of `response` times the total size of `response`"),
        # the engine's map() and filter() copy their partial result at each step: quadratic too
        ("size(response.filter(r, r.amount > 100.0)) > 10", "map() and filter() copy their partial result"),
        ("response.map(r, r.id).exists(i, i == 7)", "map() and filter() copy their partial result"),
        # `in` on the response inside a comprehension over it compares every pair of rows
        ("response.exists(r, r in response && r.id < 0)", "the length of `response` times"),
        # the pattern is compiled again for each row, and \w is a large Unicode automaton
        ("response.exists(r, r.email.matches('^\\\\w+@corp'))", "a Unicode class such as \\w"),
        # a pattern the caller supplies could take ~80 ms to compile, on every call
        ("name.matches(pattern)", "matches() needs a string literal pattern"),
        # each `+` copies everything concatenated so far
        ("size(response + response + response + response + response) > 0", "the total size of `response`"),
        # no input at all: a million steps from literals alone
        (".all(a, ".join([DIGITS] * 6) + ".all(f, true" + ")" * 6, "does not depend on the inputs"),
    ],
)
def test_a_pathological_condition_is_rejected_when_the_project_loads(condition: str, why: str) -> None:
    with pytest.raises(PolicySyntaxError) as info:
        compile_rules([rule("user.role != 'admin'"), rule(condition)], "output")
    text = str(info.value)
    assert text.startswith(f"policies.output[1] condition {condition!r} is too costly: an estimated ")
    assert f"over the limit of {COST_LIMIT:,}" in text
    assert why in text


def test_a_condition_nested_too_deep_is_rejected() -> None:
    at_limit = "(" * MAX_NESTING + "true" + ")" * MAX_NESTING
    compile_rules([rule(at_limit)], "input")
    deeper = f"[{at_limit}] == []"
    with pytest.raises(PolicySyntaxError) as info:
        compile_rules([rule(deeper)], "input")
    assert str(info.value) == (f"policies.input[0] condition {deeper!r} nests brackets, calls and comprehensions "
                               f"more than {MAX_NESTING} deep")


def test_a_rule_near_the_limit_compiles_and_runs_one_pass_more_does_not_compile() -> None:
    passes = [f"response.exists(r, r.id == -{k})" for k in range(1, 13)]
    near = " || ".join(passes[:11])  # eleven walks over a 1,000-row response, just under the limit
    compiled = compile_rules([rule(near, "mask_fields", fields=["email"])], "output")
    rows = _table(1000)
    decisions: list[Decision] = []
    assert apply_output(compiled, activation(SUPPORT, {}, rows, with_response=True), rows, [], decisions) == rows
    assert decisions[0].matched is False
    with pytest.raises(PolicySyntaxError, match=r"output\[0\] .* is too costly"):
        compile_rules([rule(" || ".join(passes), "mask_fields", fields=["email"])], "output")


@pytest.mark.parametrize(
    "condition",
    [
        "user.id == 'response.all(a, response.all(b, a == b))'",
        "user.id == r'response.all(a, response.all(b, a == b))'",
        "user.id == '''response.all(a, ' response.all(b, a == b))'''",
        'user.id == "it\\"s response.all(a, response.all(b, a == b))"',
        "user.id == 'response' // response.all(a, response.all(b, a == b))\n",
    ],
)
def test_comprehensions_inside_strings_and_comments_cost_nothing(condition: str) -> None:
    assert _deny(condition, SUPPORT) is None
    assert _deny(condition.replace("user.id ==", "user.id !="), SUPPORT) is not None


def test_an_accepted_rule_denies_a_call_whose_inputs_make_it_too_costly() -> None:
    # quadratic in the caller's list: fine for 50 ids, 25 million steps of the engine for 5,000
    rules = compile_rules([rule("ids.exists(i, ids.exists(j, i != j && i + j == -1))", reason="nope")], "input")
    decisions: list[Decision] = []
    check_input(rules, activation(SUPPORT, {"ids": list(range(50))}), decisions)
    assert decisions[0].matched is False
    with pytest.raises(CallError) as info:
        check_input(rules, activation(SUPPORT, {"ids": list(range(5000))}), decisions)
    assert info.value.kind == "policy_error"
    assert str(info.value).startswith("denied: policy input[0] could not be evaluated (its estimated cost for this "
                                      "call's inputs is ")
    assert f"over the limit of {COST_LIMIT:,}" in str(info.value)
    assert decisions[1].matched is None
    assert "estimated cost" in (decisions[1].error or "")


def test_a_rule_walking_an_input_many_times_is_denied_when_that_input_is_huge() -> None:
    # linear, but twelve walks over the caller's list: checked at each call, unlike a single walk
    condition = " || ".join(f"ids.exists(i, i == -{k})" for k in range(1, 13))
    rules = compile_rules([rule(condition)], "input")
    check_input(rules, activation(SUPPORT, {"ids": list(range(1000))}), [])
    with pytest.raises(CallError) as info:
        check_input(rules, activation(SUPPORT, {"ids": list(range(50_000))}), [])
    assert info.value.kind == "policy_error"
    assert f"over the limit of {COST_LIMIT:,}" in str(info.value)


def test_an_output_rule_too_costly_for_this_call_denies_instead_of_leaving_fields_unmasked() -> None:
    rules = compile_rules([rule("response.exists(r, r.dept in hidden)", "mask_fields", fields=["email"])], "output")
    rows = _table(1000)
    masked = apply_output(rules, activation(SUPPORT, {"hidden": ["d3"]}, rows, with_response=True), rows, [], [])
    assert {r["email"] for r in masked} == {MASK}
    hidden = [f"x{i}" for i in range(20_000)]  # 1,000 rows times 20,000 values
    with pytest.raises(CallError) as info:
        apply_output(rules, activation(SUPPORT, {"hidden": hidden}, rows, with_response=True), rows, [], [])
    assert info.value.kind == "policy_error"
    assert "output[0]" in str(info.value)


@pytest.mark.parametrize(
    "condition",
    [
        "user.role != 'admin'",
        "'support' in user.groups && has(user.claims.tenant) && user.email.endsWith('@corp.io')",
        "size(response) == 1000",
        "response.all(r, r.amount >= 0.0 && r.email.contains('@'))",
        "response.exists(r, r.id in ids)",
        "response.exists_one(r, r.id == 5)",
        "response.exists(r, r.dept in user.groups && r.email.matches('^u3@'))",
        "[1, 2, 3].filter(x, x > 1).size() == 2 && [1, 2, 3].map(x, x * 2) == [2, 4, 6]",
    ],
)
def test_usual_rules_run_on_a_1000_row_response(condition: str) -> None:
    rows = _table(1000)
    user = make_user({"email": "sam@corp.io", "groups": ["support", "d3"], "role": "agent", "tenant": "acme"})
    compiled = compile_rules([rule(condition, "mask_fields", fields=["email"])], "output")
    decisions: list[Decision] = []
    out = apply_output(compiled, activation(user, {"ids": list(range(100))}, rows, with_response=True), rows, [],
                       decisions)
    assert decisions[0].matched is True
    assert {r["email"] for r in out} == {MASK}
