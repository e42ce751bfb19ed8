"""The endpoint registry: every tool, resource and prompt of a project, built from dbt's manifest.

The registry is an immutable value. Building it checks every declaration and collects every
problem (file, node, endpoint, message) instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .endpoints import MxcpBlock, Parameter, Policies, PromptSpec, ResourceSpec, ToolSpec, format_validation_error
from .errors import EndpointProblem
from .manifest import Manifest, Node, RefError, column_mxcp, column_sensitive, paused_gc
from .policy import CompiledRule, PolicySyntaxError, compile_rules
from .sql import RenderContext, SqlError, find_parameters, model_backed_sql, single_statement, table_function_sql
from .types import TypeDef, type_from_data_type
from .uri import UriTemplate

Kind = Literal["tool", "resource", "prompt"]
KINDS: tuple[Kind, ...] = ("tool", "resource", "prompt")
Spec = ToolSpec | ResourceSpec | PromptSpec


@dataclass(frozen=True)
class Endpoint:
    """One resolved endpoint: its declaration, where it lives, its SQL and its compiled policies."""

    kind: Kind
    name: str
    spec: Spec
    node_id: str
    node_type: str
    yml_path: str
    source_kind: str  # model | table_function | file | code | analysis | prompt
    sql: str | None
    parameters: tuple[Parameter, ...]
    declared_return: TypeDef | None
    relations: tuple[str, ...]
    input_rules: tuple[CompiledRule, ...] = field(default=(), repr=False)
    output_rules: tuple[CompiledRule, ...] = field(default=(), repr=False)
    source_file: str | None = None
    uri_template: UriTemplate | None = field(default=None, repr=False, compare=False)
    # Derives (return type, sensitive paths) from dbt's columns on first use: building a registry
    # of thousands of endpoints should not pay for types nobody has asked for yet.
    derive: Callable[[], tuple[TypeDef | None, tuple[str, ...]]] | None = field(default=None, repr=False,
                                                                                 compare=False)

    @cached_property
    def _derived(self) -> tuple[TypeDef | None, tuple[str, ...]]:
        if self.derive is None:
            return self.declared_return, ()
        return self.derive()

    @property
    def return_type(self) -> TypeDef | None:
        """The declared return type, completed (or derived) from the host node's dbt columns."""
        return self._derived[0]

    @property
    def sensitive_paths(self) -> tuple[str, ...]:
        """Fields that `filter_sensitive_fields` drops: from the types and from column meta."""
        return self._derived[1]

    @property
    def enabled(self) -> bool:
        return self.spec.enabled

    @property
    def description(self) -> str | None:
        return self.spec.description

    @property
    def client_parameters(self) -> tuple[Parameter, ...]:
        """Parameters a client may send: claim-bound ones come from the caller's identity instead."""
        return tuple(p for p in self.parameters if p.bind is None)

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments a client sends."""
        properties = {}
        for p in self.client_parameters:
            schema = p.json_schema()
            properties[p.name] = schema
        required = [p.name for p in self.client_parameters if not p.has_default]
        schema_out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema_out["required"] = required
        return schema_out

    def return_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the result, or None when the return type is unknown."""
        return self.return_type.json_schema() if self.return_type is not None else None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Registry:
    """All endpoints of a project, looked up by kind and name (resources by URI template)."""

    endpoints: tuple[Endpoint, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    project_dir: Path | None = None
    _index: Mapping[tuple[str, str], Endpoint] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # First declaration wins on a (rejected) duplicate, as the build reports it.
        index: dict[tuple[str, str], Endpoint] = {}
        for e in self.endpoints:
            if e.enabled:
                index.setdefault((e.kind, e.name), e)
        object.__setattr__(self, "_index", index)

    def all(self, kind: Kind | None = None, *, include_disabled: bool = False) -> Iterator[Endpoint]:
        """Endpoints of `kind` (all kinds when None); disabled ones only when asked."""
        for e in self.endpoints:
            if (kind is None or e.kind == kind) and (include_disabled or e.enabled):
                yield e

    def get(self, kind: Kind, name: str) -> Endpoint | None:
        """An enabled endpoint by kind and name (a resource by its URI template)."""
        return self._index.get((kind, name))

    def match_resource(self, uri: str) -> tuple[Endpoint, dict[str, str]] | None:
        """The enabled resource whose URI template matches `uri`, with the URI's variables.

        A static URI wins over a template that also matches it.
        """
        static = self._index.get(("resource", uri))
        if static is not None:
            return static, {}
        for e in self.all("resource"):
            if e.uri_template is not None and (found := e.uri_template.match(uri)) is not None:
                return e, found
        return None


class _Problems:
    def __init__(self) -> None:
        self.items: list[EndpointProblem] = []

    def add(self, node: Node, endpoint: str, message: str) -> None:
        self.items.append(EndpointProblem(node.yml_path, node.unique_id, endpoint, message))


def build_registry(manifest: Manifest, project_dir: Path, *, variables: Mapping[str, Any] | None = None,
                   target: Mapping[str, Any] | None = None, compiled: Mapping[str, str] | None = None,
                   policy_sets: Mapping[str, Policies] | None = None) -> tuple[Registry, list[EndpointProblem]]:
    """Build the registry from `manifest`; returns it with every problem found.

    `compiled` maps analysis unique_ids to their compiled SQL (dbt-mxcp's dbt plugin compiles
    them, since `dbt build` does not); `policy_sets` are mxcp.yml's named policy sets.
    """
    with paused_gc():
        return _build(manifest, project_dir, variables or {}, target or {}, compiled or {}, policy_sets or {})


def _build(manifest: Manifest, project_dir: Path, variables: Mapping[str, Any], target: Mapping[str, Any],
           compiled: Mapping[str, str], policy_sets: Mapping[str, Policies]) -> tuple[Registry, list[EndpointProblem]]:
    problems = _Problems()
    context = RenderContext(manifest, variables, target)
    endpoints: list[Endpoint] = []
    for node in manifest.hosts():
        _check_columns(node, problems)
        block = node.mxcp
        if block is None:
            continue
        try:
            parsed = MxcpBlock.model_validate(block)
        except ValidationError as exc:
            problems.add(node, "", f"config.meta.mxcp: {format_validation_error(exc)}")
            continue
        builder = _NodeBuilder(manifest, node, project_dir, context, compiled, problems, policy_sets)
        for kind, items, model in (("tool", parsed.tools, ToolSpec), ("resource", parsed.resources, ResourceSpec),
                                   ("prompt", parsed.prompts, PromptSpec)):
            for i, raw in enumerate(items):
                label = f"{kind} {raw.get('name') or raw.get('uri') or f'#{i + 1}'}" if isinstance(raw, dict) \
                    else f"{kind} #{i + 1}"
                try:
                    spec = model.model_validate(raw)
                except ValidationError as exc:
                    problems.add(node, label, format_validation_error(exc))
                    continue
                endpoint = builder.build(kind, spec, label)  # type: ignore[arg-type]
                if endpoint is not None:
                    endpoints.append(endpoint)
    _check_unique(endpoints, manifest, problems)
    metadata = {k: manifest.metadata.get(k) for k in ("project_name", "invocation_id", "generated_at",
                                                      "dbt_version", "adapter_type")}
    return Registry(tuple(endpoints), metadata, project_dir), problems.items


def _check_columns(node: Node, problems: _Problems) -> None:
    for name, col in node.columns.items():
        block = column_mxcp(col)
        if block is None:
            continue
        if not isinstance(block, dict) or set(block) - {"sensitive"} or not isinstance(block.get("sensitive",
                                                                                                   False), bool):
            problems.add(node, f"column {name}", "config.meta.mxcp on a column takes only 'sensitive: true|false'")


def _check_unique(endpoints: list[Endpoint], manifest: Manifest, problems: _Problems) -> None:
    seen: dict[tuple[str, str], Endpoint] = {}
    for e in endpoints:
        key = (e.kind, e.name)
        first = seen.get(key)
        if first is None:
            seen[key] = e
            continue
        node = manifest.node(e.node_id)
        what = "resource uri" if e.kind == "resource" else f"{e.kind} name"
        if node is not None:
            problems.add(node, e.label, f"duplicate {what} {e.name!r}: also declared on {first.node_id} "
                                        f"in {first.yml_path}")


class _NodeBuilder:
    """Resolves the endpoints declared on one node."""

    def __init__(self, manifest: Manifest, node: Node, project_dir: Path, context: RenderContext,
                 compiled: Mapping[str, str], problems: _Problems, policy_sets: Mapping[str, Policies]) -> None:
        self.policy_sets = policy_sets
        self.manifest = manifest
        self.node = node
        self.project_dir = project_dir
        self.context = context
        self.compiled = compiled
        self.problems = problems

    def build(self, kind: Kind, spec: Spec, label: str) -> Endpoint | None:
        node = self.node
        if spec.description is None and node.description:
            spec = spec.model_copy(update={"description": node.description})
        if isinstance(spec, PromptSpec):
            return self._prompt(spec, label)
        unknown = [name for name in spec.policies.use if name not in self.policy_sets]
        if unknown:
            self.problems.add(node, label, f"policies.use names no policy set {', '.join(map(repr, unknown))} "
                                           f"(mxcp.yml policy_sets: {', '.join(sorted(self.policy_sets)) or 'none'})")
            return None
        used = [self.policy_sets[name] for name in spec.policies.use]
        try:
            input_rules = compile_rules([r for p in [*used, spec.policies] for r in p.input], "input")
            output_rules = compile_rules([r for p in [*used, spec.policies] for r in p.output], "output")
        except PolicySyntaxError as exc:
            self.problems.add(node, label, str(exc))
            return None
        template = None
        parameters = list(spec.parameters or [])
        if isinstance(spec, ResourceSpec):
            template = UriTemplate(spec.uri)
            if spec.parameters is None:
                parameters = [self._uri_parameter(v) for v in template.variables]
            missing = [v for v in template.variables if v not in {p.name for p in parameters}]
            if missing:
                self.problems.add(node, label, f"uri variable(s) {', '.join(missing)} are not declared parameters")
                return None
            loose = [p.name for p in parameters
                     if p.name not in template.variables and p.bind is None and not p.has_default]
            if loose:
                self.problems.add(node, label, f"parameter(s) {', '.join(loose)} appear neither in the uri nor "
                                               "have a default or a bind; a resource read cannot supply them")
                return None
        name = spec.uri if isinstance(spec, ResourceSpec) else spec.name
        resolved = self._sql(spec, parameters, label) if spec.enabled else (None, "", [], None)
        if resolved is None:
            return None
        sql, source_kind, relations, source_file = resolved
        if isinstance(spec, ToolSpec) and spec.access == "write" and spec.enabled and (
                source_kind not in ("file", "code") or relations):
            self.problems.add(node, label, "a write endpoint runs its own SQL (source.file or source.code) "
                                           "against the writes database, which holds no dbt relations: "
                                           "it cannot use ref(), source() or this")
            return None
        declared = spec.return_

        def derive() -> tuple[TypeDef | None, tuple[str, ...]]:
            return_type = self._return_type(declared, source_kind)
            return return_type, self._sensitive_paths(return_type, relations)

        return Endpoint(
            kind=kind, name=name, spec=spec, node_id=node.unique_id, node_type=node.resource_type,
            yml_path=node.yml_path, source_kind=source_kind, sql=sql or None, parameters=tuple(parameters),
            declared_return=declared, relations=tuple(dict.fromkeys(relations)), input_rules=input_rules,
            output_rules=output_rules, source_file=source_file, uri_template=template, derive=derive,
        )

    # -- SQL -------------------------------------------------------------------------------------

    def _sql(self, spec: ToolSpec | ResourceSpec, parameters: list[Parameter],
             label: str) -> tuple[str, str, list[str], str | None] | None:
        node = self.node
        declared = [p.name for p in parameters]
        relations: list[str] = []
        source_file = None
        if spec.language == "python":
            return self._python(spec, label)
        if spec.source is not None:
            if spec.source.file is not None:
                path = (self.project_dir / node.yml_path).parent / spec.source.file
                source_file = str(path.resolve().relative_to(self.project_dir.resolve())) \
                    if path.resolve().is_relative_to(self.project_dir.resolve()) else str(path.resolve())
                try:
                    text = path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    self.problems.add(node, label, f"source.file {spec.source.file!r} not found (looked for "
                                                   f"{path.resolve()}; the path is relative to {node.yml_path})")
                    return None
                except (OSError, UnicodeDecodeError) as exc:
                    self.problems.add(node, label, f"cannot read source.file {spec.source.file!r}: {exc}")
                    return None
                source_kind = "file"
            else:
                text = spec.source.code or ""
                source_kind = "code"
            host = node if node.resource_type in ("model", "seed", "snapshot", "source") else None
            try:
                sql = self.context.render(text, host, relations)
            except (SqlError, RefError) as exc:
                self.problems.add(node, label, f"{'source.file' if source_file else 'source.code'}: {exc}")
                return None
        elif node.resource_type == "analysis":
            sql = self.compiled.get(node.unique_id) or node.data.get("compiled_code") or ""
            if not sql.strip():
                self.problems.add(node, label, "the analysis has no compiled SQL: run `dbt parse` with dbt-mxcp "
                                               "installed beside dbt (its plugin compiles analyses), or `dbt compile`")
                return None
            relations = list((node.data.get("depends_on") or {}).get("nodes") or [])
            source_kind = "analysis"
        elif node.resource_type == "exposure":
            self.problems.add(node, label, "an endpoint on an exposure needs source.file or source.code")
            return None
        elif node.materialized == "table_function":
            expected = [str(p) for p in node.config.get("parameters") or []]
            if sorted(expected) != sorted(declared):
                self.problems.add(node, label, f"the table_function takes parameters {expected}; declare "
                                               f"exactly those (declared: {declared})")
                return None
            sql = table_function_sql(node.relation(), expected)
            relations = [node.unique_id]
            source_kind = "table_function"
        else:
            if not node.relation_name:
                self.problems.add(node, label, f"{node.unique_id} is not built as a relation "
                                               f"(materialized: {node.materialized}); add a source")
                return None
            columns = set(node.columns)
            unknown = [p for p in declared if columns and p not in columns]
            if unknown:
                self.problems.add(node, label, f"parameter(s) {', '.join(unknown)} are not columns of {node.name}; "
                                               "a model-backed endpoint filters by equality on columns of the "
                                               "same name (or give it a source)")
                return None
            sql = model_backed_sql(node.relation(), [p for p in declared if p])
            relations = [node.unique_id]
            source_kind = "model"
        if source_kind in ("model", "table_function"):
            return sql, source_kind, relations, source_file  # generated here: its $params are the declared ones
        try:
            sql = single_statement(sql)
            used = find_parameters(sql)
        except SqlError as exc:
            self.problems.add(node, label, str(exc))
            return None
        undeclared = [p for p in used if p not in declared]
        if undeclared:
            self.problems.add(node, label, f"SQL uses ${', $'.join(undeclared)} but the endpoint declares no such "
                                           "parameter: add it under parameters")
            return None
        unused = [p for p in declared if p not in used]
        if unused:
            self.problems.add(node, label, f"parameter(s) {', '.join(unused)} are declared but the SQL never uses "
                                           "them (write $name where the value belongs)")
            return None
        return sql, source_kind, relations, source_file

    def _python(self, spec: ToolSpec | ResourceSpec, label: str) -> tuple[str, str, list[str], str | None] | None:
        node = self.node
        if spec.source is None or spec.source.file is None or not spec.source.file.endswith(".py"):
            self.problems.add(node, label, "a Python endpoint needs source.file naming a .py file (relative to "
                                           f"{node.yml_path})")
            return None
        if isinstance(spec, ResourceSpec) and not spec.name:
            self.problems.add(node, label, "a Python resource needs a name: its function is named like it")
            return None
        path = ((self.project_dir / node.yml_path).parent / spec.source.file).resolve()
        if not path.is_file():
            self.problems.add(node, label, f"source.file {spec.source.file!r} not found (looked for {path})")
            return None
        root = self.project_dir.resolve()
        return "", "python", [], str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    # -- types -----------------------------------------------------------------------------------

    def _uri_parameter(self, name: str) -> Parameter:
        col = self.node.columns.get(name) or {}
        derived = type_from_data_type(col.get("data_type"), description=col.get("description") or None,
                                      nullable=False)
        fields = derived.model_dump(exclude_none=True, exclude={"nullable", "sensitive"}) if derived else {}
        fields.setdefault("type", "string")
        return Parameter(name=name, **fields)

    def _columns_type(self) -> TypeDef | None:
        properties = {}
        for name, col in self.node.columns.items():
            t = type_from_data_type(col.get("data_type"), description=col.get("description") or None,
                                    nullable=not self.manifest.column_not_null(self.node, name),
                                    sensitive=column_sensitive(col))
            if t is not None:
                properties[name] = t
        if not properties:
            return None
        return TypeDef(type="object", properties=properties, required=sorted(properties))

    def _return_type(self, declared: TypeDef | None, source_kind: str) -> TypeDef | None:
        if source_kind not in ("model", "table_function"):
            return declared
        row = self._columns_type()
        if declared is None:
            return TypeDef(type="array", items=row) if row is not None else None
        if declared.type == "object" and declared.properties is None and row is not None:
            return declared.model_copy(update={"properties": row.properties, "required": row.required})
        if declared.type == "array" and row is not None and (
                declared.items is None or (declared.items.type == "object" and declared.items.properties is None)):
            return declared.model_copy(update={"items": row})
        return declared

    def _sensitive_paths(self, return_type: TypeDef | None, relations: list[str]) -> tuple[str, ...]:
        paths = list(return_type.sensitive_paths()) if return_type else []
        for uid in relations:
            rel = self.manifest.node(uid)
            for name, col in (rel.columns if rel else {}).items():
                if column_sensitive(col) and name not in paths:
                    paths.append(name)
        return tuple(paths)

    # -- prompts ---------------------------------------------------------------------------------

    def _prompt(self, spec: PromptSpec, label: str) -> Endpoint | None:
        from .prompts import template_variables

        used: set[str] = set()
        for i, message in enumerate(spec.messages):
            try:
                used |= template_variables(message.prompt)
            except ValueError as exc:
                self.problems.add(self.node, label, f"messages[{i}].prompt: {exc}")
                return None
        declared = {p.name for p in spec.parameters}
        undeclared = sorted(used - declared)
        if undeclared:
            self.problems.add(self.node, label, f"messages use {', '.join(undeclared)} but no such parameter is "
                                                "declared")
            return None
        unused = sorted(declared - used)
        if unused:
            self.problems.add(self.node, label, f"parameter(s) {', '.join(unused)} are used by no message; if the "
                                                "message has {{ name }}, dbt rendered it away at parse time: wrap "
                                                "it as {% raw %}{{ name }}{% endraw %}")
            return None
        return Endpoint(kind="prompt", name=spec.name, spec=spec, node_id=self.node.unique_id,
                        node_type=self.node.resource_type, yml_path=self.node.yml_path, source_kind="prompt",
                        sql=None, parameters=tuple(spec.parameters), declared_return=None, relations=())
