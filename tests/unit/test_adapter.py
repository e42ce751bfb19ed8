"""The MCP adapter's pure parts: result wrapping, published output schemas, pagination, annotations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from mcp import MCPError

from dbt_mxcp.endpoints import PolicyRule, ToolSpec
from dbt_mxcp.pipeline import Outcome
from dbt_mxcp.policy import compile_rules
from dbt_mxcp.registry import Endpoint
from dbt_mxcp.server.adapter import PAGE_SIZE, _page, output_schema, tool_of
from dbt_mxcp.types import SchemaChecker, TypeDef


def _endpoint(return_: dict[str, Any] | None, *, output: list[dict[str, Any]] | None = None,
              access: str = "read") -> Endpoint:
    spec = ToolSpec.model_validate({"name": "t", "description": "d", "access": access, "return": return_,
                                    "source": {"code": "select 1"}})
    rules = compile_rules([PolicyRule.model_validate(r) for r in output or []], "output")
    return Endpoint(kind="tool", name="t", spec=spec, node_id="model.p.m", node_type="model", yml_path="m.yml",
                    source_kind="code", sql="select 1", parameters=(),
                    declared_return=TypeDef.model_validate(return_) if return_ else None, relations=(),
                    output_rules=rules)


ROW = {"type": "object", "properties": {"id": {"type": "integer"}, "email": {"type": "string"},
                                        "ssn": {"type": "string"}}, "required": ["id", "email", "ssn"]}


def test_object_results_are_the_row_and_arrays_are_wrapped() -> None:
    obj = _endpoint(ROW)
    assert Outcome(obj, {}, {"id": 1, "email": "a", "ssn": "b"}).structured() == {"id": 1, "email": "a",
                                                                                   "ssn": "b"}
    arr = _endpoint({"type": "array", "items": ROW})
    truncated = Outcome(arr, {}, [{"id": 1}], truncated=True, note="narrow it")
    assert truncated.structured() == {"result": [{"id": 1}], "truncated": True, "note": "narrow it"}
    scalar = _endpoint({"type": "number"})
    value = Outcome(scalar, {}, Decimal("12.50")).structured()
    assert value == {"result": 12.5} and isinstance(value["result"], float)  # a JSON number, not a string


def test_published_schema_allows_what_output_policies_do() -> None:
    endpoint = _endpoint({"type": "array", "items": ROW}, output=[
        {"condition": "true", "action": "mask_fields", "fields": ["email"]},
        {"condition": "true", "action": "filter_fields", "fields": ["ssn"]},
    ])
    schema = output_schema(endpoint)
    assert schema is not None and schema["required"] == ["result"]
    checker = SchemaChecker(schema)
    assert checker.problems({"result": [{"id": 1, "email": "****"}]}) == []  # masked and filtered rows conform
    assert checker.problems({"result": [{"id": "x", "email": "****"}]}) != []  # other fields still checked


def test_pagination_cursor() -> None:
    items = list(range(PAGE_SIZE * 2 + 5))
    first, cursor = _page(items, None)
    assert list(first) == items[:PAGE_SIZE] and cursor == str(PAGE_SIZE)
    second, cursor = _page(items, cursor)
    third, last = _page(items, cursor)
    assert list(first) + list(second) + list(third) == items and last is None
    for bad in ("-1", "abc", str(len(items) + 1)):
        with pytest.raises(MCPError):
            _page(items, bad)


def test_annotations_for_reads_and_writes() -> None:
    read = tool_of(_endpoint(None)).annotations
    assert read is not None and read.read_only_hint is True and read.destructive_hint is False
    write = tool_of(_endpoint(None, access="write")).annotations
    assert write is not None and write.read_only_hint is False and write.destructive_hint is True
