"""Every `tests:` case written in the example and integration yml files, run through the real pipeline.

The expectations in those files were computed by hand from the seed data. The assertion checks
here are this test's own (the product's `dbt-mxcp test` runner is separate), so a pipeline bug
cannot hide behind a matching bug in the checker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from dbt_mxcp.endpoints import EndpointTest
from dbt_mxcp.errors import CallError
from dbt_mxcp.load import Loaded, load
from dbt_mxcp.pipeline import Pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.registry import Endpoint
from dbt_mxcp.warehouse import open_warehouse
from tests.helpers import Project


def _same(expected: Any, actual: Any) -> bool:
    """Equality where numbers compare by value (yml floats vs exact decimals)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and set(expected) == set(actual) and all(
            _same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, int | float | Decimal) and not isinstance(expected, bool):
        return isinstance(actual, int | float | Decimal) and not isinstance(actual, bool) and \
            Decimal(str(expected)) == Decimal(str(actual))
    return bool(expected == actual and type(expected) is type(actual))


def _partial(expected: dict[str, Any], actual: Any) -> bool:
    return isinstance(actual, dict) and all(k in actual and _same(v, actual[k]) for k, v in expected.items())


def _check(test: EndpointTest, outcome: Any) -> None:
    for keyword, expected in test.assertions.items():
        if keyword == "result":
            assert _same(expected, outcome), f"{test.name}: {outcome!r} != {expected!r}"
        elif keyword == "result_contains":
            ok = _partial(expected, outcome) if isinstance(outcome, dict) else any(
                _partial(expected, item) if isinstance(expected, dict) else _same(expected, item) for item in outcome)
            assert ok, f"{test.name}: {outcome!r} does not contain {expected!r}"
        elif keyword == "result_contains_item":
            assert any(_partial(expected, item) for item in outcome), f"{test.name}: no item like {expected!r}"
        elif keyword == "result_contains_all":
            for want in expected:
                assert any(_partial(want, item) for item in outcome), f"{test.name}: no item like {want!r}"
        elif keyword == "result_not_contains":
            for field in expected:
                assert field not in outcome, f"{test.name}: {field!r} present"
        elif keyword == "result_masked":
            for row in outcome if isinstance(outcome, list) else [outcome]:
                for field in expected:
                    assert row.get(field) == "****", f"{test.name}: {field!r} not masked in {row!r}"
        elif keyword == "result_length":
            assert len(outcome) == expected, f"{test.name}: {len(outcome)} items, expected {expected}"
        elif keyword == "result_contains_text":
            text = outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)
            assert expected in text, f"{test.name}: {expected!r} not in {text!r}"


def _cases(loaded: Loaded) -> Iterator[tuple[Endpoint, EndpointTest]]:
    for endpoint in loaded.registry.all():
        for test in endpoint.spec.tests:
            yield endpoint, test


def _run(project: Project) -> int:
    path = str(project.path)
    loaded = load(Flags(project_dir=path, profiles_dir=path))
    warehouse = open_warehouse(loaded.require_warehouse())
    pipeline = Pipeline(loaded.registry, warehouse)
    count = 0
    try:
        for endpoint, test in _cases(loaded):
            count += 1
            arguments = dict(test.arguments)
            try:
                if endpoint.kind == "resource":
                    assert endpoint.uri_template is not None
                    outcome = pipeline.read_resource(endpoint.uri_template.expand(arguments), test.user_context).value
                else:
                    outcome = pipeline.call(endpoint, arguments, test.user_context).value
            except CallError as exc:
                wanted = test.expect_error if test.expect_error is not None else test.expect_denied
                assert wanted not in (None, False), f"{endpoint.label} {test.name}: {exc}"
                if test.expect_denied not in (None, False):
                    assert exc.kind in ("denied", "policy_error"), f"{endpoint.label} {test.name}: {exc}"
                if isinstance(wanted, str):
                    assert wanted in str(exc), f"{endpoint.label} {test.name}: {exc}"
                continue
            assert test.expect_error in (None, False) and test.expect_denied in (None, False), \
                f"{endpoint.label} {test.name}: no error, got {outcome!r}"
            _check(test, outcome)
    finally:
        warehouse.close()
    return count


def test_integration_project_yml_tests(it_project: Project) -> None:
    assert _run(it_project) >= 40


def test_shop_example_yml_tests(shop_project: Project) -> None:
    assert _run(shop_project) >= 25


@pytest.mark.parametrize(("expected", "actual", "same"), [
    (1.5, Decimal("1.50"), True), (1, True, False), ([1], [1, 2], False), ({"a": 1}, {"a": 1, "b": 2}, False),
    (None, None, True), ("1", 1, False),
])
def test_checker_itself(expected: Any, actual: Any, same: bool) -> None:
    assert _same(expected, actual) is same
