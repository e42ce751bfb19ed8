"""dbt_mxcp.types: declared types, their JSON Schema, dbt data_type mapping and value checking."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from dbt_mxcp.types import SchemaChecker, TypeDef, to_bind_value, type_from_data_type

# ---- declarations ------------------------------------------------------------------------------


def test_snake_case_and_camel_case_keywords_declare_the_same_type() -> None:
    snake = TypeDef.model_validate({
        "type": "array", "min_items": 1, "max_items": 3, "unique_items": True,
        "items": {"type": "string", "min_length": 2, "max_length": 5},
    })
    camel = TypeDef.model_validate({
        "type": "array", "minItems": 1, "maxItems": 3, "uniqueItems": True,
        "items": {"type": "string", "minLength": 2, "maxLength": 5},
    })
    assert snake == camel
    expected = {"type": "array", "minItems": 1, "maxItems": 3, "uniqueItems": True,
                "items": {"type": "string", "minLength": 2, "maxLength": 5}}
    assert snake.json_schema() == expected
    assert camel.json_schema() == expected


def test_camel_case_numeric_and_object_keywords_accepted() -> None:
    t = TypeDef.model_validate({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5})
    assert t.json_schema() == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5}
    o = TypeDef.model_validate({"type": "object", "additionalProperties": False})
    assert o.json_schema() == {"type": "object", "additionalProperties": False}


def test_misspelled_keyword_rejected() -> None:
    with pytest.raises(ValidationError, match="minLenght"):
        TypeDef.model_validate({"type": "string", "minLenght": 2})


def test_unknown_type_name_rejected() -> None:
    with pytest.raises(ValidationError):
        TypeDef.model_validate({"type": "varchar"})


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"type": "integer", "min_length": 1}, "'min_length' applies to type string, not integer"),
        ({"type": "number", "format": "email"}, "'format' applies to type string, not number"),
        ({"type": "string", "pattern": "a", "minimum": 1}, "'minimum' applies to type integer or number, not string"),
        ({"type": "string", "maximum": 1}, "'maximum' applies to type integer or number, not string"),
        ({"type": "object", "items": {"type": "string"}}, "'items' applies to type array, not object"),
        ({"type": "array", "properties": {"a": {"type": "string"}}}, "'properties' applies to type object, not array"),
        ({"type": "boolean", "required": ["a"]}, "'required' applies to type object, not boolean"),
        ({"type": "integer", "unique_items": True}, "'unique_items' applies to type array, not integer"),
    ],
)
def test_keyword_that_does_not_fit_the_type_is_rejected_with_a_message(declared: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TypeDef.model_validate(declared)
    assert message in str(info.value)


def test_bad_regex_pattern_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        TypeDef.model_validate({"type": "string", "pattern": "([a-z]+"})
    text = str(info.value)
    assert "'([a-z]+'" in text
    assert "not a valid regular expression" in text


def test_required_name_missing_from_properties_rejected() -> None:
    with pytest.raises(ValidationError, match="nope"):
        TypeDef.model_validate({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["nope"]})


# ---- JSON Schema -------------------------------------------------------------------------------


def test_json_schema_keeps_every_string_keyword() -> None:
    t = TypeDef.model_validate({
        "type": "string", "description": "Work email", "format": "email", "enum": ["a@b.co", "c@d.io"],
        "examples": ["a@b.co"], "default": "a@b.co", "min_length": 3, "max_length": 50, "pattern": "@",
    })
    assert t.json_schema() == {
        "type": "string", "description": "Work email", "format": "email", "enum": ["a@b.co", "c@d.io"],
        "examples": ["a@b.co"], "default": "a@b.co", "minLength": 3, "maxLength": 50, "pattern": "@",
    }


def test_json_schema_keeps_numeric_keywords() -> None:
    t = TypeDef.model_validate({"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
                                "multiple_of": 5, "examples": [10, 20]})
    assert t.json_schema() == {"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
                               "multipleOf": 5, "examples": [10, 20]}


def test_json_schema_keeps_a_declared_null_default() -> None:
    declared_null = TypeDef.model_validate({"type": "string", "default": None})
    schema = declared_null.json_schema()
    assert "default" in schema
    assert schema["default"] is None


def test_json_schema_has_no_default_when_none_declared() -> None:
    assert "default" not in TypeDef(type="string").json_schema()


def test_json_schema_of_nested_object_and_array() -> None:
    t = TypeDef.model_validate({
        "type": "object",
        "description": "A customer",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "max_items": 2},
            "address": {"type": "object", "properties": {"city": {"type": "string"}},
                        "additionalProperties": True},
        },
        "required": ["id"],
        "additional_properties": False,
    })
    assert t.json_schema() == {
        "type": "object",
        "description": "A customer",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2},
            "address": {"type": "object", "properties": {"city": {"type": "string"}},
                        "additionalProperties": True},
        },
        "required": ["id"],
        "additionalProperties": False,
    }


def test_json_schema_is_valid_draft_2020_12() -> None:
    from jsonschema import Draft202012Validator

    t = TypeDef.model_validate({"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                                                 "n": {"type": "number", "exclusiveMinimum": 0}},
                                "required": ["d"]})
    Draft202012Validator.check_schema(t.json_schema())


# ---- dbt data_type mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "type_name", "fmt"),
    [
        ("varchar", "string", None),
        ("VARCHAR(255)", "string", None),
        ("integer", "integer", None),
        ("bigint", "integer", None),
        ("double", "number", None),
        ("decimal(12,2)", "number", None),
        ("DECIMAL(12, 2)", "number", None),
        ("date", "string", "date"),
        ("timestamp", "string", "timestamp"),
        ("timestamptz", "string", "date-time"),
        ("timestamp with time zone", "string", "date-time"),
        ("boolean", "boolean", None),
    ],
)
def test_scalar_data_types(data_type: str, type_name: str, fmt: str | None) -> None:
    t = type_from_data_type(data_type)
    assert t is not None
    assert t.type == type_name
    assert t.format == fmt


def test_data_type_columns_are_nullable_by_default_and_not_when_told() -> None:
    nullable = type_from_data_type("integer")
    assert nullable is not None
    assert nullable.json_schema() == {"type": ["integer", "null"]}
    not_null = type_from_data_type("integer", nullable=False)
    assert not_null is not None
    assert not_null.json_schema() == {"type": "integer"}


@pytest.mark.parametrize(("data_type", "item_type"), [("varchar[]", "string"), ("list(integer)", "integer"),
                                                      ("INTEGER[]", "integer"), ("list<double>", "number")])
def test_list_data_types_become_arrays_of_their_item_type(data_type: str, item_type: str) -> None:
    t = type_from_data_type(data_type)
    assert t is not None
    assert t.type == "array"
    assert t.items is not None
    assert t.items.type == item_type


def test_struct_data_type_is_an_object() -> None:
    t = type_from_data_type("struct(a integer, b varchar)")
    assert t is not None
    assert t.type == "object"


def test_json_column_may_hold_any_json_value() -> None:
    # A DuckDB JSON column holds any JSON document: '[1,2]', '"x"' and '3' are all valid JSON values.
    # The derived return type must not reject them (else such a model's endpoint fails on them).
    # (None, "not type-checked", would also do.)
    t = type_from_data_type("json", nullable=False)
    if t is None:
        return
    checker = SchemaChecker(t.json_schema())
    assert checker.problems([1, 2]) == []
    assert checker.problems("x") == []
    assert checker.problems(3) == []


@pytest.mark.parametrize("data_type", ["unknown", "geometry", "", None])
def test_unknown_data_type_is_none(data_type: str | None) -> None:
    assert type_from_data_type(data_type) is None


def test_description_and_sensitive_carried_from_the_column() -> None:
    t = type_from_data_type("varchar", description="Email address", sensitive=True)
    assert t is not None
    assert t.description == "Email address"
    assert t.sensitive is True


# ---- checking values ---------------------------------------------------------------------------


def _params_checker() -> SchemaChecker:
    return SchemaChecker({
        "type": "object",
        "properties": {
            "query": TypeDef(type="string", min_length=2).json_schema(),
            "limit": TypeDef(type="integer", minimum=1, maximum=100).json_schema(),
            "status": TypeDef(type="string", enum=["open", "closed"]).json_schema(),
            "email": TypeDef(type="string", format="email").json_schema(),
            "address": TypeDef.model_validate({
                "type": "object", "properties": {"city": {"type": "string", "max_length": 5}},
            }).json_schema(),
        },
        "required": ["query"],
        "additionalProperties": False,
    })


def test_conforming_arguments_have_no_problems() -> None:
    assert _params_checker().problems({"query": "ali", "limit": 10, "status": "open"}) == []


def test_min_length_problem_names_parameter_and_rule() -> None:
    [problem] = _params_checker().problems({"query": "a"})
    assert "'query'" in problem
    assert "min_length" in problem
    assert "2" in problem


def test_maximum_problem_names_parameter_and_bound() -> None:
    [problem] = _params_checker().problems({"query": "ali", "limit": 500})
    assert "'limit'" in problem
    assert "maximum" in problem
    assert "100" in problem
    assert "500" in problem


def test_minimum_problem() -> None:
    [problem] = _params_checker().problems({"query": "ali", "limit": 0})
    assert "'limit'" in problem
    assert "minimum" in problem


def test_enum_problem_lists_the_allowed_values() -> None:
    [problem] = _params_checker().problems({"query": "ali", "status": "pending"})
    assert "'status'" in problem
    assert "open" in problem
    assert "closed" in problem
    assert "pending" in problem


def test_format_problem_names_parameter_and_format() -> None:
    [problem] = _params_checker().problems({"query": "ali", "email": "not-an-email"})
    assert "'email'" in problem
    assert "email" in problem.replace("'email'", "")
    assert "format" in problem


def test_missing_required_parameter_is_named() -> None:
    [problem] = _params_checker().problems({"limit": 5})
    assert "required" in problem
    assert "'query'" in problem


def test_unexpected_parameter_is_named() -> None:
    [problem] = _params_checker().problems({"query": "ali", "qurey": "x"})
    assert "unexpected" in problem
    assert "qurey" in problem


def test_nested_problem_names_the_dotted_path() -> None:
    [problem] = _params_checker().problems({"query": "ali", "address": {"city": "Amsterdam"}})
    assert "'address.city'" in problem
    assert "max_length" in problem


def test_array_item_problem_names_its_index() -> None:
    checker = SchemaChecker(TypeDef.model_validate({
        "type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer", "maximum": 3}}},
    }).json_schema())
    [problem] = checker.problems({"ids": [1, 2, 9]})
    assert "'ids.2'" in problem
    assert "maximum" in problem


def test_type_problem() -> None:
    [problem] = _params_checker().problems({"query": 42})
    assert "'query'" in problem
    assert "string" in problem


def test_every_problem_is_reported() -> None:
    problems = _params_checker().problems({"query": "a", "limit": 0, "status": "x"})
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("fmt", "valid", "invalid"),
    [
        ("email", ["a@b.co", "first.last+tag@sub.example.org"], ["no-at.example.com", "a@b", "a b@c.io"]),
        ("uri", ["https://x.io/a?b=1", "mailto:a@b.co", "urn:isbn:0451450523"],
         ["not a uri", "/relative/path", "://no-scheme"]),
        ("date", ["2024-02-29", "1999-12-31"], ["2023-02-29", "2024-1-5", "2024-13-01", "yesterday",
                                                 "2024-01-02T03:04:05"]),
        ("time", ["10:11:12", "23:59:59.5", "10:11:12+02:00"], ["25:00:00", "10:61:00", "noon"]),
        ("date-time", ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05.123-05:00"],
         ["2024-01-02T03:04:05", "2024-01-02", "2024-13-02T03:04:05Z", "now"]),
        ("timestamp", ["2024-01-02T03:04:05", "2024-01-02T03:04:05.123456"],
         ["2024-01-02", "yesterday", "2024-01-32T00:00:00"]),
        ("duration", ["P1D", "PT1H30M", "P1Y2M3DT4H5M6.5S", "PT0S", "P2W"], ["P", "PT", "1D", "P1DT", "PT1X", "1 day"]),
    ],
)
def test_formats(fmt: str, valid: list[str], invalid: list[str]) -> None:
    checker = SchemaChecker(TypeDef(type="string", format=fmt).json_schema())  # type: ignore[arg-type]
    for value in valid:
        assert checker.problems(value) == [], value
    for value in invalid:
        problems = checker.problems(value)
        assert len(problems) == 1, value
        assert fmt in problems[0]
        assert "format" in problems[0]


def test_date_time_without_offset_is_named_in_the_problem() -> None:
    checker = SchemaChecker({"type": "object", "properties": {"since": {"type": "string", "format": "date-time"}}})
    [problem] = checker.problems({"since": "2024-01-02T03:04:05"})
    assert "'since'" in problem
    assert "date-time" in problem


def test_format_does_not_apply_to_non_strings() -> None:
    # A number is a type problem, not a format one; format checks only judge strings.
    checker = SchemaChecker({"format": "date"})
    assert checker.problems(5) == []


# ---- values to bind ----------------------------------------------------------------------------


def test_date_string_bound_as_date() -> None:
    assert to_bind_value(TypeDef(type="string", format="date"), "2024-02-29") == dt.date(2024, 2, 29)


def test_date_time_string_bound_as_aware_datetime() -> None:
    value = to_bind_value(TypeDef(type="string", format="date-time"), "2024-01-02T03:04:05+02:00")
    assert value == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.UTC)
    assert value.utcoffset() == dt.timedelta(hours=2)


def test_date_time_with_z_bound_as_utc() -> None:
    value = to_bind_value(TypeDef(type="string", format="date-time"), "2024-01-02T03:04:05Z")
    assert value == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_timestamp_string_bound_as_naive_datetime() -> None:
    value = to_bind_value(TypeDef(type="string", format="timestamp"), "2024-01-02T03:04:05.250000")
    assert value == dt.datetime(2024, 1, 2, 3, 4, 5, 250000)
    assert value.tzinfo is None


def test_time_string_bound_as_time() -> None:
    assert to_bind_value(TypeDef(type="string", format="time"), "10:11:12") == dt.time(10, 11, 12)


def test_dates_inside_arrays_bound_as_dates() -> None:
    t = TypeDef.model_validate({"type": "array", "items": {"type": "string", "format": "date"}})
    assert to_bind_value(t, ["2024-01-01", "2024-12-31"]) == [dt.date(2024, 1, 1), dt.date(2024, 12, 31)]


def test_times_inside_object_properties_bound() -> None:
    t = TypeDef.model_validate({"type": "object", "properties": {"at": {"type": "string", "format": "time"},
                                                                 "label": {"type": "string"}}})
    assert to_bind_value(t, {"at": "08:30:00", "label": "08:30:00"}) == {"at": dt.time(8, 30), "label": "08:30:00"}


def test_other_values_bound_unchanged() -> None:
    assert to_bind_value(TypeDef(type="string"), "2024-01-01") == "2024-01-01"
    assert to_bind_value(TypeDef(type="integer"), 7) == 7
    assert to_bind_value(TypeDef(type="string", format="date"), None) is None
    assert to_bind_value(None, "2024-01-01") == "2024-01-01"


def test_bound_values_work_in_duckdb() -> None:
    import duckdb

    con = duckdb.connect()
    d = to_bind_value(TypeDef(type="string", format="date"), "2024-02-28")
    row = con.execute("select $d + interval 1 day = date '2024-02-29'", {"d": d}).fetchone()
    assert row == (True,)


@pytest.mark.parametrize(("fmt", "good", "bad"), [
    ("date", "2024-02-29", "2024-W01-1"),
    ("time", "10:30", "10"),
    ("date-time", "2024-01-02T10:00:00Z", "2024-01-02T10Z"),
    ("timestamp", "2024-01-02 03:04:05", "2024-01-02"),
])
def test_formats_follow_their_iso_shapes(fmt: str, good: str, bad: str) -> None:
    checker = SchemaChecker({"type": "string", "format": fmt})
    assert checker.problems(good) == []
    assert checker.problems(bad) != []


def test_integer_bounds_stay_integers_in_the_schema() -> None:
    schema = TypeDef(type="integer", minimum=1, maximum=100).json_schema()
    assert schema["minimum"] == 1 and isinstance(schema["minimum"], int)
    assert isinstance(schema["maximum"], int)
