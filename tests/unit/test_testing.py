"""The assertion checks of `dbt-mxcp test` on hand-written results."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dbt_mxcp.endpoints import EndpointTest
from dbt_mxcp.errors import CallError
from dbt_mxcp.testing import check

ROWS = [{"id": 1, "name": "Ann", "salary": Decimal("6100.00"), "email": "****", "tags": {"team": "eng"}},
        {"id": 2, "name": "Bob", "salary": Decimal("5000.50"), "email": "****", "tags": {"team": "ops"}}]


def _check(value: Any, error: CallError | None = None, **assertions: Any) -> list[str]:
    return check(EndpointTest.model_validate({"name": "t", **assertions}), value, error)


@pytest.mark.parametrize(("assertions", "passes"), [
    ({"result": [{**r, "salary": float(r["salary"])} for r in ROWS]}, True),  # yml floats vs exact decimals
    ({"result": ROWS[:1]}, False),
    ({"result": [{**ROWS[0], "extra": 1}, ROWS[1]]}, False),
    ({"result_contains": {"name": "Bob"}}, True),  # on rows: some row has it (MXCP's reading)
    ({"result_contains_item": {"name": "Bob", "tags": {"team": "ops"}}}, True),
    ({"result_contains_item": {"name": "Bob", "tags": {"team": "eng"}}}, False),
    ({"result_contains_all": [{"id": 1}, {"id": 2}]}, True),
    ({"result_contains_all": [{"id": 1}, {"id": 3}]}, False),
    ({"result_length": 2}, True),
    ({"result_length": 3}, False),
    ({"result_not_contains": ["phone", "tags.region"]}, True),
    ({"result_not_contains": ["tags.team"]}, False),
    ({"result_masked": ["email"]}, True),
    ({"result_masked": ["name"]}, False),
    ({"result_contains_item": {"id": 2, "salary": 5000.5}}, True),
    ({"result_contains_item": {"id": 2, "salary": 5000.51}}, False),
    ({"result_contains_item": {"id": 2, "salary": 5000.51}, "tolerance": 0.02}, True),
    ({"result_contains_text": '"name":"Bob"'}, True),
    ({}, True),  # no assertion: the call answering is enough
])
def test_assertions_on_rows(assertions: dict[str, Any], passes: bool) -> None:
    assert (_check(ROWS, **assertions) == []) is passes


def test_booleans_are_not_numbers() -> None:
    assert _check({"active": True}, result={"active": 1})
    assert _check({"count": 1}, result={"count": True})
    assert not _check({"active": True}, result={"active": True})


def test_prompt_messages_as_text() -> None:
    messages = [{"role": "user", "content": "Describe team eng."}, {"role": "assistant", "content": "Sure."}]
    assert not _check(messages, result_contains_text="team eng")
    assert _check(messages, result_contains_text="team ops")


def test_expected_errors_and_denials() -> None:
    denied = CallError("denied", "HR only")
    invalid = CallError("invalid_arguments", "parameter 'team' must be a string")
    assert not _check(None, denied, expect_error=True)
    assert not _check(None, denied, expect_denied="HR only")
    assert "not by a policy (invalid_arguments)" in _check(None, invalid, expect_denied=True)[0]
    assert "does not contain 'HR'" in _check(None, invalid, expect_error="HR")[0]
    assert "the call succeeded" in _check(ROWS, None, expect_denied=True)[0]
    assert "the call failed (denied): HR only" in _check(None, denied, result_length=1)[0]


def test_every_failed_assertion_is_reported() -> None:
    failures = _check(ROWS, result_length=5, result_masked=["name"], result_contains_item={"id": 9})
    assert sorted(f.split(":")[0] for f in failures) == ["result_contains_item", "result_length", "result_masked"]
