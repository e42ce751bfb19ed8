"""The engine and warehouse on a real built DuckDB file: limits, deadlines, read-only hardening."""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Iterator

import pytest

from dbt_mxcp.engine import Limits, run_query
from dbt_mxcp.errors import CallError
from dbt_mxcp.load import Loaded, load
from dbt_mxcp.pipeline import Pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.warehouse import Warehouse, open_warehouse
from tests.helpers import REPO, Project


@pytest.fixture(scope="module")
def loaded(it_project: Project) -> Loaded:
    path = str(it_project.path)
    return load(Flags(project_dir=path, profiles_dir=path))


@pytest.fixture
def warehouse(loaded: Loaded) -> Iterator[Warehouse]:
    wh = open_warehouse(loaded.require_warehouse())
    yield wh
    wh.close()


def _people_with(letter: str) -> list[int]:
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        return [int(r["id"]) for r in csv.DictReader(fh) if letter in r["name"].lower()]


def test_max_rows_truncates_visibly(loaded: Loaded, warehouse: Warehouse) -> None:
    everyone = _people_with("a")
    assert len(everyone) > 2
    outcome = Pipeline(loaded.registry, warehouse, Limits(max_rows=2)).call_tool(
        "search_people", {"name_query": "a"}, {"role": "admin"})
    assert [r["id"] for r in outcome.value] == everyone[:2]
    assert outcome.truncated is True
    assert outcome.note is not None and "2-row cap" in outcome.note and "Narrow the query" in outcome.note


def test_endpoint_max_rows_is_capped_by_the_global_limit(loaded: Loaded, warehouse: Warehouse) -> None:
    endpoint = loaded.registry.get("tool", "search_people")
    assert endpoint is not None
    narrowed = dataclasses.replace(endpoint, spec=endpoint.spec.model_copy(update={"max_rows": 1}))
    pipeline = Pipeline(loaded.registry, warehouse, Limits(max_rows=5))
    outcome = pipeline.call(narrowed, {"name_query": "a"}, {"role": "admin"})
    assert len(outcome.value) == 1 and outcome.truncated
    widened = dataclasses.replace(endpoint, spec=endpoint.spec.model_copy(update={"max_rows": 500}))
    outcome = pipeline.call(widened, {"name_query": "a", "limit": 100}, {"role": "admin"})
    assert len(outcome.value) == min(5, len(_people_with("a")))


def test_max_bytes_truncates(warehouse: Warehouse) -> None:
    cursor = warehouse.cursor()
    result = run_query(cursor, "select range as i, repeat('x', 100) as pad from range(1000)", {},
                       Limits(max_rows=1000, max_bytes=1000))
    assert result.truncated and result.truncated_by == "max_bytes"
    assert 0 < len(result.rows) < 10
    assert [r["i"] for r in result.rows] == list(range(len(result.rows)))


def test_large_result_is_fetched_only_up_to_the_cap(warehouse: Warehouse) -> None:
    cursor = warehouse.cursor()
    result = run_query(cursor, "select range as i from range(10000000)", {}, Limits(max_rows=3))
    assert [r["i"] for r in result.rows] == [0, 1, 2] and result.truncated


def test_deadline_interrupts_the_query(warehouse: Warehouse) -> None:
    cursor = warehouse.cursor()
    started = time.monotonic()
    with pytest.raises(CallError) as info:
        run_query(cursor, "select sum(a.range * b.range) from range(1000000) a, range(1000000) b", {},
                  Limits(timeout=0.5))
    assert info.value.kind == "timeout" and "0.5 s deadline" in str(info.value)
    assert time.monotonic() - started < 30  # interrupted, not run to completion (hours)
    # The connection is still usable after an interrupt.
    assert run_query(warehouse.cursor(), "select 1 as x", {}, Limits()).rows == [{"x": 1}]


@pytest.mark.parametrize(("sql", "fragment"), [
    ("select * from read_csv('/etc/passwd')", "disabled by configuration"),
    ("create table people_copy as select 1 as x", "read-only mode"),
    ("create table memory.main.x as select 1 as x", "memory"),
    ("set enable_external_access = true", "configuration has been locked"),
    ("attach '/tmp/evil.duckdb' as evil", "disabled by configuration"),
    ("install httpfs", ""),
])
def test_serving_connection_is_hardened(warehouse: Warehouse, sql: str, fragment: str) -> None:
    with pytest.raises(CallError) as info:
        run_query(warehouse.cursor(), sql, {}, Limits())
    assert fragment in str(info.value)


def test_parameters_are_bound_not_spliced(loaded: Loaded, warehouse: Warehouse) -> None:
    pipeline = Pipeline(loaded.registry, warehouse)
    for attack in ["' OR '1'='1", "%'; drop table people; --", "$name_query", "\\' or 1=1"]:
        assert pipeline.call_tool("search_people", {"name_query": attack}).value == []
    assert pipeline.call_tool("get_person", {"id": 1}).value["name"] == "Ann"


def test_result_breaking_the_declared_type_is_an_error(loaded: Loaded, warehouse: Warehouse) -> None:
    # search_people declares email as a non-null string; Kurt (id 12) has none.
    pipeline = Pipeline(loaded.registry, warehouse)
    with pytest.raises(CallError) as info:
        pipeline.call_tool("search_people", {"name_query": "kurt"}, {"role": "admin"})
    assert info.value.kind == "invalid_result"
    assert "'0.email' must be of type string, got None" in str(info.value)
