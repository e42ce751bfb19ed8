"""dbt_mxcp.policy: CEL rules compiled once, evaluated per call, failing closed."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from dbt_mxcp.endpoints import PolicyRule
from dbt_mxcp.errors import CallError
from dbt_mxcp.policy import (
    Decision,
    PolicySyntaxError,
    activation,
    apply_output,
    check_input,
    compile_rules,
)
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
