"""The endpoint format: what may be written under ``config.meta.mxcp`` in a dbt yml file.

Unknown keys are rejected, so a typo is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .types import TypeDef

RESERVED_PARAMETER_NAMES = ("user", "response")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
ACTIONS = ("deny", "filter_fields", "filter_sensitive_fields", "mask_fields")
# Assertions on a result; `expect_error`/`expect_denied` instead say the call must fail.
ASSERTIONS = ("result", "result_contains", "result_not_contains", "result_masked", "result_contains_item",
              "result_contains_all", "result_length", "result_contains_text")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{what} {value!r} must start with a letter and contain only letters, digits and _")
    return value


class Parameter(TypeDef):
    """A declared parameter: a type plus its name, and optionally the identity claim it is bound to."""

    name: str
    bind: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v in RESERVED_PARAMETER_NAMES:
            raise ValueError(f"parameter name {v!r} is reserved: policies see the caller as `user` and the result "
                             "as `response`")
        return _check_name(v, "parameter name")

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^user\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", v):
            raise ValueError(f"bind {v!r} must name a field of the caller, e.g. user.email or user.claims.tenant")
        return v


class Source(_Strict):
    """Where an endpoint's SQL comes from: a file (relative to the yml) or inline code."""

    file: str | None = None
    code: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        if (self.file is None) == (self.code is None):
            raise ValueError("source needs exactly one of 'file' or 'code'")
        if self.file is not None and "\x00" in self.file:  # no path holds one (os calls raise ValueError)
            raise ValueError("source.file must not contain a NUL character")
        return self


class PolicyRule(_Strict):
    """One CEL rule: when `condition` is true, `action` applies."""

    condition: str
    action: Literal["deny", "filter_fields", "filter_sensitive_fields", "mask_fields"]
    reason: str | None = Field(default=None, validation_alias=AliasChoices("reason", "message"))
    fields: list[str] | None = None

    @model_validator(mode="after")
    def _fields(self) -> PolicyRule:
        if self.action in ("filter_fields", "mask_fields") and not self.fields:
            raise ValueError(f"action {self.action} needs 'fields': the (dotted) field names it acts on")
        if self.action in ("deny", "filter_sensitive_fields") and self.fields:
            raise ValueError(f"action {self.action} takes no 'fields'")
        return self


class Policies(_Strict):
    """Input rules (before execution) and output rules (on the result); `use` names policy sets of
    mxcp.yml whose rules come first."""

    use: list[str] = Field(default_factory=list)
    input: list[PolicyRule] = Field(default_factory=list)
    output: list[PolicyRule] = Field(default_factory=list)

    @field_validator("input")
    @classmethod
    def _input_deny_only(cls, rules: list[PolicyRule]) -> list[PolicyRule]:
        for rule in rules:
            if rule.action != "deny":
                raise ValueError(f"input policies can only deny; {rule.action} belongs under output")
        return rules


class EndpointTest(_Strict):
    """One test case: arguments, who calls, and what the result must satisfy."""

    name: str
    description: str | None = None
    arguments: dict[str, Any] = {}
    user_context: dict[str, Any] | None = None
    result: Any = None
    result_contains: Any = None
    result_not_contains: list[Any] | None = None
    result_contains_item: Any = None
    result_contains_all: list[Any] | None = None
    result_length: int | None = None
    result_contains_text: str | None = None
    result_masked: list[str] | None = None  # dotted fields that must be present and masked
    expect_error: bool | str | None = None
    expect_denied: bool | str | None = None  # the call must be refused by a policy
    tolerance: float | None = Field(default=None, ge=0)  # numbers match within this (absolute)

    @model_validator(mode="after")
    def _one_outcome(self) -> EndpointTest:
        if self.expect_error not in (None, False) and self.expect_denied not in (None, False):
            raise ValueError("a test takes expect_error or expect_denied, not both")
        if (self.expect_error or self.expect_denied) and self.assertions:
            raise ValueError(f"a test that expects an error cannot also assert on the result "
                             f"({', '.join(self.assertions)})")
        return self

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, v: Any) -> Any:
        # MXCP writes arguments as a list of {key, value}; accept it.
        if isinstance(v, list):
            out = {}
            for item in v:
                if not (isinstance(item, dict) and set(item) == {"key", "value"}):
                    raise ValueError("arguments as a list must hold {key, value} items")
                out[item["key"]] = item["value"]
            return out
        return v if v is not None else {}

    @property
    def assertions(self) -> dict[str, Any]:
        """The assertions this test declares, by keyword."""
        return {k: getattr(self, k) for k in ASSERTIONS if k in self.model_fields_set}


class _Endpoint(_Strict):
    description: str | None = None
    language: Literal["sql", "python"] = "sql"
    parameters: list[Parameter] = Field(default_factory=list)
    return_: TypeDef | None = Field(default=None, alias="return")
    source: Source | None = None
    policies: Policies = Field(default_factory=Policies)
    tests: list[EndpointTest] = Field(default_factory=list)
    enabled: bool = True
    max_rows: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _unique_parameters(self) -> _Endpoint:
        names = [p.name for p in self.parameters or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"parameter(s) declared twice: {', '.join(dupes)}")
        tests = [t.name for t in self.tests]
        dupes = sorted({n for n in tests if tests.count(n) > 1})
        if dupes:
            raise ValueError(f"test name(s) used twice: {', '.join(dupes)}")
        return self


class Annotations(_Strict):
    """MCP tool annotations (hints to clients)."""

    title: str | None = None
    readOnlyHint: bool | None = None
    destructiveHint: bool | None = None
    idempotentHint: bool | None = None
    openWorldHint: bool | None = None


class ToolSpec(_Endpoint):
    """A tool declared in yml."""

    name: str
    title: str | None = None
    annotations: Annotations | None = None
    tags: list[str] = Field(default_factory=list)
    access: Literal["read", "write"] = "read"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "tool name")


class ResourceSpec(_Endpoint):
    """A resource (or resource template, when `uri` has {variables}) declared in yml."""

    uri: str
    name: str | None = None
    mime_type: str | None = None
    parameters: list[Parameter] | None = None  # type: ignore[assignment]  # None: derived from the URI

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        from .uri import UriTemplate

        UriTemplate(v)  # raises ValueError with a clear message
        return v


class PromptMessage(_Strict):
    """One message of a prompt; `prompt` is a Jinja template over the parameters."""

    role: Literal["user", "assistant", "system"] = "user"
    prompt: str
    type: Literal["text"] = "text"


class PromptSpec(_Strict):
    """A prompt declared in yml."""

    name: str
    description: str | None = None
    parameters: list[Parameter] = []
    messages: list[PromptMessage]
    tests: list[EndpointTest] = []
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "prompt name")


class MxcpBlock(_Strict):
    """The whole ``config.meta.mxcp`` block of one node. Column blocks use `sensitive` only."""

    tools: list[dict[str, Any]] = Field(default_factory=list)
    resources: list[dict[str, Any]] = Field(default_factory=list)
    prompts: list[dict[str, Any]] = Field(default_factory=list)


def format_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line per problem, with the yml path of each."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        loc = loc.replace("return_", "return")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see docs/endpoints.md for the allowed keys)"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
