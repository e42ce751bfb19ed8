"""The endpoint type system: declarations, JSON Schema 2020-12, dbt data_type mapping, checking.

Declarations use snake_case keywords (``min_length``); MXCP's camelCase spellings
(``minLength``) are accepted too. Every declared keyword reaches the JSON Schema.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

TypeName = Literal["string", "number", "integer", "boolean", "array", "object"]
FORMATS = ("email", "uri", "date", "time", "date-time", "duration", "timestamp")

# keyword in yml -> keyword in JSON Schema
_SCHEMA_KEYWORDS = {
    "description": "description",
    "format": "format",
    "enum": "enum",
    "examples": "examples",
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusive_minimum": "exclusiveMinimum",
    "exclusive_maximum": "exclusiveMaximum",
    "multiple_of": "multipleOf",
    "min_items": "minItems",
    "max_items": "maxItems",
    "unique_items": "uniqueItems",
    "required": "required",
}


# keyword -> the types it applies to
_APPLIES_TO: dict[str, frozenset[str]] = {
    **dict.fromkeys(("format", "min_length", "max_length", "pattern"), frozenset({"string"})),
    **dict.fromkeys(("minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "multiple_of"),
                    frozenset({"number", "integer"})),
    **dict.fromkeys(("items", "min_items", "max_items", "unique_items"), frozenset({"array"})),
    **dict.fromkeys(("properties", "required", "additional_properties"), frozenset({"object"})),
}


def _alias(name: str) -> Any:
    camel = _SCHEMA_KEYWORDS.get(name, name)
    return Field(default=None, validation_alias=AliasChoices(name, camel))


class TypeDef(BaseModel):
    """A declared type: a parameter's, a return's, or a nested item's or property's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    type: TypeName
    description: str | None = None
    format: Literal["email", "uri", "date", "time", "date-time", "duration", "timestamp"] | None = None
    enum: list[Any] | None = None
    examples: list[Any] | None = None
    default: Any = None
    sensitive: bool = False
    nullable: bool = Field(default=False, exclude=True)
    min_length: int | None = _alias("min_length")
    max_length: int | None = _alias("max_length")
    pattern: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: int | float | None = _alias("exclusive_minimum")
    exclusive_maximum: int | float | None = _alias("exclusive_maximum")
    multiple_of: int | float | None = _alias("multiple_of")
    items: TypeDef | None = None
    min_items: int | None = _alias("min_items")
    max_items: int | None = _alias("max_items")
    unique_items: bool | None = _alias("unique_items")
    properties: dict[str, TypeDef] | None = None
    required: list[str] | None = None
    additional_properties: bool | None = Field(
        default=None, validation_alias=AliasChoices("additional_properties", "additionalProperties")
    )

    @model_validator(mode="after")
    def _check_keywords(self) -> TypeDef:
        problems = [f"'{key}' applies to type {' or '.join(sorted(_APPLIES_TO[key]))}, not {self.type}"
                    for key in sorted(self.model_fields_set & _APPLIES_TO.keys())
                    if getattr(self, key) is not None and self.type not in _APPLIES_TO[key]]
        if self.multiple_of is not None and not self.multiple_of > 0:  # JSON Schema's rule; 0 divides by zero
            problems.append(f"multiple_of must be greater than 0, got {self.multiple_of}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                problems.append(f"pattern {self.pattern!r} is not a valid regular expression: {exc}")
        if self.required and self.properties is not None:
            missing = [r for r in self.required if r not in self.properties]
            if missing:
                problems.append(f"required names {missing} that are not among its properties")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def has_default(self) -> bool:
        """Whether a default was declared (a declared `default: null` counts)."""
        return "default" in self.model_fields_set

    def json_schema(self) -> dict[str, Any]:
        """This type as a JSON Schema 2020-12 fragment, every declared keyword kept."""
        schema: dict[str, Any] = {"type": [self.type, "null"] if self.nullable else self.type}
        for key, keyword in _SCHEMA_KEYWORDS.items():
            value = getattr(self, key)
            if value is not None:
                schema[keyword] = value
        if self.nullable and self.enum is not None and None not in self.enum:
            schema["enum"] = [*self.enum, None]  # `nullable` also allows null, an enum too
        if self.has_default:
            schema["default"] = self.default
        if self.items is not None:
            schema["items"] = self.items.json_schema()
        if self.properties is not None:
            schema["properties"] = {k: v.json_schema() for k, v in self.properties.items()}
        if self.additional_properties is not None:
            schema["additionalProperties"] = self.additional_properties
        if self.sensitive:
            # An annotation only: clients see which values are sensitive.
            schema["x-sensitive"] = True
        return schema

    def sensitive_paths(self, prefix: str = "") -> Iterator[str]:
        """Dotted paths of the sensitive fields inside this type (array items share their parent's path)."""
        if self.sensitive and prefix:
            yield prefix
        if self.items is not None:
            yield from self.items.sensitive_paths(prefix)
        for name, prop in (self.properties or {}).items():
            yield from prop.sensitive_paths(f"{prefix}.{name}" if prefix else name)


# dbt / DuckDB data_type -> our type. Parameterised types are matched on their base name.
_DATA_TYPES: dict[str, tuple[TypeName, str | None]] = {
    **{t: ("string", None) for t in ("varchar", "text", "string", "char", "bpchar", "uuid", "enum", "blob",
                                      "bytea", "bit", "interval")},
    **{t: ("integer", None) for t in ("integer", "int", "int4", "int8", "int2", "int1", "bigint", "smallint",
                                       "tinyint", "hugeint", "uhugeint", "ubigint", "uinteger", "usmallint",
                                       "utinyint", "long", "short", "signed")},
    **{t: ("number", None) for t in ("double", "float", "float4", "float8", "real", "decimal", "numeric")},
    "boolean": ("boolean", None),
    "bool": ("boolean", None),
    "logical": ("boolean", None),
    "date": ("string", "date"),
    "time": ("string", "time"),
    "timestamp": ("string", "timestamp"),
    "datetime": ("string", "timestamp"),
    "timestamp_s": ("string", "timestamp"),
    "timestamp_ms": ("string", "timestamp"),
    "timestamp_ns": ("string", "timestamp"),
    "timestamp_us": ("string", "timestamp"),
    "timestamptz": ("string", "date-time"),
    "timestamp with time zone": ("string", "date-time"),
    "timetz": ("string", "time"),
    "time with time zone": ("string", "time"),
}
_JSON_TYPES = {"json"}


def type_from_data_type(data_type: str | None, *, description: str | None = None,
                        nullable: bool = True, sensitive: bool = False) -> TypeDef | None:
    """Map a dbt/DuckDB `data_type` (e.g. ``decimal(12,2)``, ``varchar[]``, ``struct(a int)``) to a type.

    Returns None for an unknown or missing data_type (the value is then not type-checked).
    """
    if not data_type:
        return None
    text = data_type.strip().lower()
    common: dict[str, Any] = {"description": description, "nullable": nullable, "sensitive": sensitive}
    listed = re.match(r"^(?:list|array)\s*[<(](.*)[>)]$", text)
    if text.endswith("[]") or listed:
        item = type_from_data_type(text[:-2] if text.endswith("[]") else listed.group(1))  # type: ignore[union-attr]
        return TypeDef(type="array", items=item, **common)
    if text in _JSON_TYPES:
        return None  # a JSON column may hold any JSON value
    if text.startswith(("struct", "map")):
        return TypeDef(type="object", **common)
    base = re.split(r"[\s(]", text, maxsplit=1)[0] if not text.startswith(("timestamp with", "time with")) else text
    if base in _DATA_TYPES:
        name, fmt = _DATA_TYPES[base]
        return TypeDef(type=name, format=fmt, **common)  # type: ignore[arg-type]
    return None


# ---- checking values ---------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?P<sep>[Tt ])\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
                       r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")
_DURATION = re.compile(
    r"^P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
    r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?$"
)


def _iso(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        return None


def _check_format(fmt: str, value: str) -> bool:
    if fmt == "email":
        return bool(_EMAIL.match(value))
    if fmt == "uri":
        return bool(_URI.match(value))
    if fmt == "duration":
        return bool(_DURATION.match(value))
    if fmt == "date":
        return bool(_DATE.match(value)) and _iso(dt.date.fromisoformat, value) is not None
    if fmt == "time":
        return bool(_TIME.match(value)) and _iso(dt.time.fromisoformat, value.replace("Z", "+00:00")) is not None
    m = _DATETIME.match(value)
    if m is None or _iso(dt.datetime.fromisoformat, value.replace("Z", "+00:00")) is None:
        return False
    # date-time is RFC 3339 (a 'T' and an offset); timestamp is a local ISO 8601 timestamp.
    if fmt == "date-time":
        return m.group("sep") in "Tt" and m.group("offset") is not None
    return True


def _format_checker() -> Any:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    for fmt in FORMATS:
        checker.checks(fmt)(lambda value, fmt=fmt: not isinstance(value, str) or _check_format(fmt, value))
    return checker


@lru_cache(maxsize=1)
def _finite_validator() -> Any:
    """Draft 2020-12 where NaN and the infinities are no numbers: JSON has none (Python's json module reads
    them), and NaN passes every bound."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.TYPE_CHECKER
    checker = base.redefine("number", lambda c, v: base.is_type(v, "number")
                            and not (isinstance(v, float) and not math.isfinite(v)))
    return validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]


class SchemaChecker:
    """A JSON Schema compiled once; `problems()` lists what a value breaks, each naming its path.

    `finite`: a NaN or an infinity where the schema says number is refused (for arguments).
    """

    def __init__(self, schema: Mapping[str, Any], *, finite: bool = False) -> None:
        from jsonschema import Draft202012Validator

        cls = _finite_validator() if finite else Draft202012Validator
        self._validator = cls(dict(schema), format_checker=_format_checker())

    def problems(self, value: Any) -> list[str]:
        """Every rule `value` breaks, as readable sentences; empty when it conforms."""
        out = []
        try:
            errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        except (OverflowError, ValueError) as exc:  # e.g. a 400-digit integer against a fractional multiple_of
            return [f"the value holds a number that cannot be checked ({exc})"]
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path)
            out.append(describe_violation(path, error.validator, error.validator_value, error.instance,
                                          error.message))
        return out


def describe_violation(path: str, rule: Any, expected: Any, value: Any, fallback: str) -> str:
    """One sentence naming the value's path, the rule it breaks and the rule's bound."""
    where = f"'{path}'" if path else "the value"
    shown = quoted(value)
    messages = {
        "type": f"{where} must be of type {expected}, got {shown}",
        "enum": f"{where} must be one of {expected}, got {shown}",
        "format": f"{where} must be a valid {expected} (format), got {shown}",
        "minLength": f"{where} must be at least {expected} characters long (min_length), got {shown}",
        "maxLength": f"{where} must be at most {expected} characters long (max_length), got {shown}",
        "pattern": f"{where} must match the pattern {expected!r}, got {shown}",
        "minimum": f"{where} must be >= {expected} (minimum), got {shown}",
        "maximum": f"{where} must be <= {expected} (maximum), got {shown}",
        "exclusiveMinimum": f"{where} must be > {expected} (exclusive_minimum), got {shown}",
        "exclusiveMaximum": f"{where} must be < {expected} (exclusive_maximum), got {shown}",
        "multipleOf": f"{where} must be a multiple of {expected} (multiple_of), got {shown}",
        "minItems": f"{where} must have at least {expected} items (min_items)",
        "maxItems": f"{where} must have at most {expected} items (max_items)",
        "uniqueItems": f"{where} must not contain duplicate items (unique_items)",
    }
    if rule in messages:
        return messages[rule]
    if rule == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        names = ", ".join(f"'{_join(path, k)}'" for k in missing) or str(expected)
        return f"missing required {'parameter' if not path else 'field'} {names}"
    if rule == "additionalProperties" and isinstance(value, dict):
        return f"{where} has unexpected field(s): {fallback.split('(')[-1].rstrip(')')}"
    return f"{where}: {fallback}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def quoted(value: Any) -> str:
    """A value as an argument error quotes it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_bind_value(t: TypeDef | None, value: Any) -> Any:
    """Convert a checked JSON argument to the Python value DuckDB should bind (dates, decimals)."""
    if value is None or t is None:
        return value
    if t.type == "string" and isinstance(value, str):
        if t.format == "date":
            return dt.date.fromisoformat(value)
        if t.format in ("date-time", "timestamp"):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if t.format == "time":
            return dt.time.fromisoformat(value.replace("Z", "+00:00"))
    if t.type == "array" and isinstance(value, list):
        return [to_bind_value(t.items, v) for v in value]
    if t.type == "object" and isinstance(value, dict) and t.properties:
        return {k: to_bind_value(t.properties.get(k), v) for k, v in value.items()}
    return value
