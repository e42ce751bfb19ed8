"""dbt_mxcp.endpoints: the endpoint format under config.meta.mxcp."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from dbt_mxcp.endpoints import (
    EndpointTest,
    Parameter,
    PolicyRule,
    PromptSpec,
    ResourceSpec,
    Source,
    ToolSpec,
    format_validation_error,
)

# The customers example of DESIGN.md, as dbt puts it into config.meta.mxcp.
DESIGN_MXCP: dict[str, Any] = {
    "tools": [
        {
            "name": "get_customer",
            "description": "One customer by id.",
            "parameters": [{"name": "customer_id", "type": "integer"}],
            "return": {"type": "object"},
        },
        {
            "name": "search_customers",
            "description": "Find customers by part of their name.",
            "annotations": {"readOnlyHint": True},
            "tags": ["crm"],
            "parameters": [
                {"name": "query", "type": "string", "min_length": 2, "description": "Part of a first or last name"},
                {"name": "limit", "type": "integer", "default": 10, "minimum": 1, "maximum": 100},
            ],
            "source": {"file": "../../endpoints/search_customers.sql"},
            "policies": {
                "input": [{"condition": "!('support' in user.groups)", "action": "deny",
                           "reason": "Support staff only"}],
                "output": [{"condition": "user.role != 'admin'", "action": "mask_fields", "fields": ["email"]}],
            },
            "tests": [
                {"name": "finds_alice", "arguments": {"query": "ali"}, "user_context": {"groups": ["support"]},
                 "result_contains_item": {"first_name": "Alice"}},
                {"name": "others_denied", "arguments": {"query": "ali"}, "user_context": {"groups": []},
                 "expect_error": "Support staff only"},
            ],
        },
    ],
    "resources": [
        {"uri": "customers://{customer_id}", "description": "A customer's profile", "mime_type": "application/json"},
    ],
}


def _tool(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "t"}
    base.update(overrides)
    return base


def _error(cls: Any, data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    return format_validation_error(info.value)


# ---- DESIGN's example --------------------------------------------------------------------------


def test_design_example_tools_accepted() -> None:
    get_customer, search = (ToolSpec.model_validate(t) for t in DESIGN_MXCP["tools"])
    assert get_customer.name == "get_customer"
    assert get_customer.source is None
    assert get_customer.return_ is not None
    assert get_customer.return_.type == "object"
    assert [p.name for p in get_customer.parameters] == ["customer_id"]

    assert search.annotations is not None
    assert search.annotations.readOnlyHint is True
    assert search.tags == ["crm"]
    assert search.source == Source(file="../../endpoints/search_customers.sql")
    query, limit = search.parameters
    assert query.min_length == 2
    assert query.description == "Part of a first or last name"
    assert limit.default == 10
    assert limit.json_schema() == {"type": "integer", "default": 10, "minimum": 1, "maximum": 100}
    assert search.policies.input[0].reason == "Support staff only"
    assert search.policies.output[0].fields == ["email"]
    assert [t.name for t in search.tests] == ["finds_alice", "others_denied"]
    assert search.tests[0].arguments == {"query": "ali"}
    assert search.tests[0].assertions == {"result_contains_item": {"first_name": "Alice"}}
    assert search.tests[1].assertions == {} and search.tests[1].expect_error == "Support staff only"
    assert search.enabled is True


def test_design_example_resource_accepted() -> None:
    r = ResourceSpec.model_validate(DESIGN_MXCP["resources"][0])
    assert r.uri == "customers://{customer_id}"
    assert r.mime_type == "application/json"
    assert r.parameters is None  # derived from the URI later


def test_prompt_accepted() -> None:
    p = PromptSpec.model_validate({
        "name": "summarise_customer",
        "description": "Summarise one customer",
        "parameters": [{"name": "customer_id", "type": "integer"}],
        "messages": [{"role": "system", "prompt": "You are terse."},
                     {"prompt": "Summarise customer {{ customer_id }}"}],
    })
    assert [m.role for m in p.messages] == ["system", "user"]


def test_prompt_needs_messages() -> None:
    assert "messages" in _error(PromptSpec, {"name": "p"})


def test_prompt_message_role_checked() -> None:
    text = _error(PromptSpec, {"name": "p", "messages": [{"role": "robot", "prompt": "hi"}]})
    assert "messages.0.role" in text
    assert "robot" in text


# ---- unknown keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (_tool(descripton="x"), "descripton"),
        (_tool(parameters=[{"name": "q", "type": "string", "min_lenght": 2}]), "parameters.0.min_lenght"),
        (_tool(**{"return": {"type": "object", "propertes": {}}}), "return.propertes"),
        (_tool(policies={"input": [{"condition": "true", "action": "deny", "reasn": "x"}]}),
         "policies.input.0.reasn"),
        (_tool(policies={"inputs": []}), "policies.inputs"),
        (_tool(tests=[{"name": "a", "argumnets": {}}]), "tests.0.argumnets"),
        (_tool(annotations={"readOnly": True}), "annotations.readOnly"),
        (_tool(source={"file": "x.sql", "lang": "sql"}), "source.lang"),
    ],
)
def test_unknown_key_rejected_naming_its_path(data: dict[str, Any], path: str) -> None:
    text = _error(ToolSpec, data)
    assert f"{path}: unknown key" in text


def test_unknown_key_in_a_design_tool_is_found() -> None:
    tool = copy.deepcopy(DESIGN_MXCP["tools"][1])
    tool["parameters"][1]["maximun"] = 5
    assert "parameters.1.maximun: unknown key" in _error(ToolSpec, tool)


def test_unknown_key_in_a_resource() -> None:
    assert "mimetype: unknown key" in _error(ResourceSpec, {"uri": "x://y", "mimetype": "text/plain"})


# ---- names and parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["get-customer", "1tool", "_private", "has space", "", "naïve"])
def test_bad_tool_names_rejected(name: str) -> None:
    text = _error(ToolSpec, {"name": name})
    assert "name" in text
    assert repr(name) in text


@pytest.mark.parametrize("name", ["a", "getCustomer", "get_customer_2"])
def test_good_tool_names_accepted(name: str) -> None:
    assert ToolSpec.model_validate({"name": name}).name == name


def test_bad_parameter_name_rejected() -> None:
    assert "parameters.0.name" in _error(ToolSpec, _tool(parameters=[{"name": "customer-id", "type": "integer"}]))


def test_duplicate_parameter_names_rejected() -> None:
    text = _error(ToolSpec, _tool(parameters=[{"name": "q", "type": "string"}, {"name": "q", "type": "integer"}]))
    assert "twice" in text
    assert "q" in text


def test_duplicate_test_names_rejected() -> None:
    assert "twice" in _error(ToolSpec, _tool(tests=[{"name": "a"}, {"name": "a"}]))


def test_parameter_needs_a_type() -> None:
    assert "parameters.0.type" in _error(ToolSpec, _tool(parameters=[{"name": "q"}]))


def test_parameter_keyword_that_does_not_fit_its_type() -> None:
    text = _error(ToolSpec, _tool(parameters=[{"name": "n", "type": "integer", "min_length": 1}]))
    assert "parameters.0" in text
    assert "min_length" in text


def test_limits_must_be_positive() -> None:
    assert "max_rows" in _error(ToolSpec, _tool(max_rows=0))
    assert "timeout" in _error(ToolSpec, _tool(timeout=0))


def test_bad_resource_uri_rejected() -> None:
    assert "scheme" in _error(ResourceSpec, {"uri": "customers/{id}"})


# ---- policies ----------------------------------------------------------------------------------


def test_policy_message_accepted_as_reason() -> None:
    rule = PolicyRule.model_validate({"condition": "true", "action": "deny", "message": "Not for you"})
    assert rule.reason == "Not for you"
    tool = ToolSpec.model_validate(_tool(policies={"input": [{"condition": "true", "action": "deny",
                                                              "message": "Not for you"}]}))
    assert tool.policies.input[0].reason == "Not for you"


@pytest.mark.parametrize("action", ["mask_fields", "filter_fields", "filter_sensitive_fields"])
def test_input_policies_other_than_deny_rejected(action: str) -> None:
    rule: dict[str, Any] = {"condition": "true", "action": action}
    if action != "filter_sensitive_fields":
        rule["fields"] = ["email"]
    text = _error(ToolSpec, _tool(policies={"input": [rule]}))
    assert "policies.input" in text
    assert action in text


def test_output_deny_accepted() -> None:
    tool = ToolSpec.model_validate(_tool(policies={"output": [{"condition": "true", "action": "deny"}]}))
    assert tool.policies.output[0].action == "deny"


@pytest.mark.parametrize("action", ["mask_fields", "filter_fields"])
def test_field_actions_need_fields(action: str) -> None:
    text = _error(ToolSpec, _tool(policies={"output": [{"condition": "true", "action": action}]}))
    assert "policies.output.0" in text
    assert "fields" in text
    text = _error(ToolSpec, _tool(policies={"output": [{"condition": "true", "action": action, "fields": []}]}))
    assert "fields" in text


def test_unknown_action_rejected_showing_it() -> None:
    text = _error(ToolSpec, _tool(policies={"output": [{"condition": "true", "action": "redact"}]}))
    assert "policies.output.0.action" in text
    assert "'redact'" in text


def test_deny_takes_no_fields() -> None:
    assert "fields" in _error(ToolSpec, _tool(policies={"output": [{"condition": "true", "action": "deny",
                                                                     "fields": ["a"]}]}))


# ---- tests -------------------------------------------------------------------------------------


def test_mxcp_list_of_key_value_arguments_becomes_a_mapping() -> None:
    t = EndpointTest.model_validate({"name": "a", "arguments": [{"key": "query", "value": "ali"},
                                                               {"key": "ids", "value": [1, 2]}]})
    assert t.arguments == {"query": "ali", "ids": [1, 2]}


def test_arguments_mapping_kept() -> None:
    assert EndpointTest.model_validate({"name": "a", "arguments": {"limit": 3}}).arguments == {"limit": 3}


def test_arguments_default_empty() -> None:
    assert EndpointTest.model_validate({"name": "a"}).arguments == {}


def test_malformed_argument_list_rejected() -> None:
    text = _error(EndpointTest, {"name": "a", "arguments": [{"key": "q"}]})
    assert "arguments" in text
    assert "key" in text


def test_assertions_lists_only_declared_ones() -> None:
    t = EndpointTest.model_validate({"name": "a", "result_length": 0, "expect_error": False})
    assert t.assertions == {"result_length": 0}


@pytest.mark.parametrize(("test", "fragment"), [
    ({"expect_error": True, "expect_denied": True}, "expect_error or expect_denied, not both"),
    ({"expect_denied": "no", "result_length": 1}, "cannot also assert on the result (result_length)"),
    ({"tolerance": -1}, "tolerance"),
])
def test_contradictory_tests_are_refused(test: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        EndpointTest.model_validate({"name": "a", **test})
    assert fragment in str(info.value)


# ---- bind and source ---------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["user.email", "user.claims.tenant", "user.claims.org.id"])
def test_bind_to_a_user_field(bind: str) -> None:
    assert Parameter.model_validate({"name": "p", "type": "string", "bind": bind}).bind == bind


@pytest.mark.parametrize("bind", ["email", "users.email", "user.", "user.claims.", "user.e-mail", "user.email; drop"])
def test_bind_must_look_like_user_x(bind: str) -> None:
    text = _error(ToolSpec, _tool(parameters=[{"name": "p", "type": "string", "bind": bind}]))
    assert "parameters.0.bind" in text
    assert "user." in text


def test_source_file_or_code() -> None:
    assert Source.model_validate({"file": "a.sql"}).file == "a.sql"
    assert Source.model_validate({"code": "select 1"}).code == "select 1"


@pytest.mark.parametrize("source", [{}, {"file": "a.sql", "code": "select 1"}])
def test_source_needs_exactly_one_of_file_or_code(source: dict[str, Any]) -> None:
    text = _error(ToolSpec, _tool(source=source))
    assert "source" in text
    assert "exactly one" in text
