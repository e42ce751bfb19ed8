"""`lint`: rules that make endpoints clearer to a language model and safer to serve.

Every rule has a stable kebab-case id, a severity (error, warning, info) and a fix hint; docs/lint.md
describes each. A rule is a function over a `Context` that yields `Issue`s; `lint()` runs them all
and keeps one `Finding` per rule and location. Nothing here prints, runs dbt or opens the
warehouse: lint reads dbt's manifest, the registry built from it and the project's yml files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from .endpoints import Parameter, Policies, PolicyRule
from .load import Loaded
from .manifest import Node
from .policy_cost import TooCostly, tokens
from .registry import Endpoint
from .settings import SETTINGS_FILE
from .sql import _spans
from .types import TypeDef
from .user import STANDARD_FIELDS

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")  # most severe first


def at_least(severity: Severity, minimum: Severity) -> bool:
    """Whether `severity` is `minimum` or more severe."""
    return SEVERITIES.index(severity) <= SEVERITIES.index(minimum)


@dataclass(frozen=True)
class Location:
    """Where a finding is: a project-relative file, a line when known, and what inside it."""

    file: str
    line: int | None = None
    node: str | None = None  # dbt unique_id
    endpoint: str | None = None  # e.g. "tool get_customer"
    subject: str | None = None  # e.g. "parameter status", "column email", "policies.output[0]"


class Issue(NamedTuple):
    """What a rule function reports; `hint` replaces the rule's own when the fix is specific."""

    location: Location
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Finding:
    """One finding: the rule that caught it, where, what is wrong and how to fix it."""

    rule: str
    severity: Severity
    message: str
    hint: str
    location: Location

    @property
    def about(self) -> str:
        """``endpoint (or node): subject``: what the finding is about, as far as known."""
        loc = self.location
        return ": ".join(p for p in (loc.endpoint or loc.node, loc.subject) if p)

    @property
    def where(self) -> str:
        """``file:line: endpoint (or node): subject``, as the text output shows it."""
        loc = self.location
        return ": ".join(p for p in (f"{loc.file}:{loc.line}" if loc.line else loc.file, self.about) if p)

    def to_dict(self) -> dict[str, Any]:
        """The finding as one flat JSON object."""
        return {"rule": self.rule, "severity": self.severity, "message": self.message, "hint": self.hint,
                **asdict(self.location)}


Check = Callable[["Context"], Iterator[Issue]]


@dataclass(frozen=True)
class Rule:
    """A lint rule: its id, severity, what it catches, the usual fix, and the check itself."""

    id: str
    severity: Severity
    title: str
    hint: str
    check: Check


RULES: dict[str, Rule] = {}


def rule(id_: str, severity: Severity, title: str, hint: str) -> Callable[[Check], Check]:
    """Register a check under `id_` (the order of registration is the order rules run in)."""

    def register(check: Check) -> Check:
        RULES[id_] = Rule(id_, severity, title, hint, check)
        return check

    return register


def lint(loaded: Loaded) -> list[Finding]:
    """Every rule's findings on a loaded project: one per rule and location, by file, line and rule."""
    ctx = Context(loaded)
    seen: set[tuple[str, Location]] = set()
    findings: list[Finding] = []
    for r in RULES.values():
        for issue in r.check(ctx):
            if (r.id, issue.location) in seen:
                continue
            seen.add((r.id, issue.location))
            findings.append(Finding(r.id, r.severity, issue.message, issue.hint or r.hint, issue.location))
    findings.sort(key=lambda f: (f.location.file, f.location.line or 0, SEVERITIES.index(f.severity), f.rule))
    return findings


# ---- the project as rules see it ---------------------------------------------------------------

Step = str | tuple[str, str]  # a mapping key, or (key, value) picking the list item whose key is value
SECTIONS = {"model": "models", "seed": "seeds", "snapshot": "snapshots", "analysis": "analyses",
            "exposure": "exposures"}
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YmlFiles:
    """The project's yml files as YAML node trees (read once each), for line numbers and structure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[str, yaml.Node | None] = {}
        # (id of a list node, key) -> the list's items by their value of key: one scan per list, not per lookup
        self._items: dict[tuple[int, str], dict[str | None, yaml.Node]] = {}

    def tree(self, file: str) -> yaml.Node | None:
        """The composed document of `file`; None when it is missing or not YAML."""
        if file not in self._trees:
            try:
                self._trees[file] = yaml.compose((self.root / file).read_text(encoding="utf-8"), Loader=_LOADER)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                self._trees[file] = None
        return self._trees[file]

    def find(self, file: str, steps: Sequence[Step]) -> tuple[yaml.Node, int] | None:
        """The node at `steps` and the 1-based line of its key (or list item); None if a step is missing."""
        node = self.tree(file)
        if node is None:
            return None
        line = node.start_mark.line + 1
        for step in steps:
            if isinstance(step, str):
                if not isinstance(node, yaml.MappingNode):
                    return None
                hit = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step),
                           None)
                if hit is None:
                    return None
                line, node = hit[0].start_mark.line + 1, hit[1]
            else:
                if not isinstance(node, yaml.SequenceNode):
                    return None
                item = self._item(node, *step)
                if item is None:
                    return None
                line, node = item.start_mark.line + 1, item
        return node, line

    def _item(self, seq: yaml.SequenceNode, key: str, value: str) -> yaml.Node | None:
        index = self._items.get((id(seq), key))
        if index is None:
            index = {}
            for item in seq.value:
                index.setdefault(_scalar(item, key), item)  # the first of a (rejected) duplicate name
            self._items[(id(seq), key)] = index
        return index.get(value)


def _scalar(node: yaml.Node, key: str) -> str | None:
    """The scalar value of `key` in a mapping node (None when absent or not a scalar)."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.ScalarNode):
                return str(v.value)
    return None


class Context:
    """What rules read: the loaded project, its enabled endpoints, yml trees and dbt's tests."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.manifest = loaded.manifest
        self.endpoints = list(loaded.registry.all())
        self.yml = YmlFiles(loaded.project.project_dir)
        self._nodes: dict[str, Node | None] = {}

    def node(self, unique_id: str) -> Node | None:
        """A manifest node, source or exposure by unique_id (cached: rules ask often)."""
        if unique_id not in self._nodes:
            self._nodes[unique_id] = self.manifest.node(unique_id)
        return self._nodes[unique_id]

    @cached_property
    def accepted_values(self) -> dict[tuple[str, str], list[Any]]:
        """(node id, column) → the values dbt's `accepted_values` test allows there."""
        out: dict[tuple[str, str], list[Any]] = {}
        for test in self.manifest.nodes():
            meta = test.data.get("test_metadata") or {}
            kwargs = meta.get("kwargs") or {}
            column, attached = test.data.get("column_name") or kwargs.get("column_name"), test.data.get("attached_node")
            if test.resource_type == "test" and meta.get("name") == "accepted_values" and column and attached:
                values = kwargs.get("values") or (kwargs.get("arguments") or {}).get("values")
                if isinstance(values, list):
                    out[(attached, str(column).strip('"'))] = values
        return out

    @cached_property
    def yml_keys(self) -> list[tuple[str, YmlKey]]:
        """(file, key) of every mapping key in the project's own yml files that dbt read."""
        return [(file, key) for file in _yml_files(self) if (tree := self.yml.tree(file)) is not None
                for key in _keys(tree)]

    def raw(self, e: Endpoint) -> Mapping[str, Any]:
        """The endpoint's declaration as written (before the registry filled in anything)."""
        node = self.node(e.node_id)
        block = node.mxcp if node is not None else None
        items = block.get(f"{e.kind}s") if isinstance(block, dict) else None
        key = "uri" if e.kind == "resource" else "name"
        return next((i for i in items or [] if isinstance(i, dict) and i.get(key) == e.name), {})

    def at(self, e: Endpoint, *steps: Step, subject: str | None = None) -> Location:
        """The location of the endpoint (or of `steps` inside its declaration) in its yml file."""
        line = self.line_of(e.yml_path, self.node(e.node_id), [*_own(e.kind, e.name), *steps])
        return Location(e.yml_path, line, e.node_id, e.label, subject)

    def at_node(self, node: Node, *steps: Step, subject: str | None = None) -> Location:
        """The location of a dbt node (or of `steps` inside its yml entry, e.g. a column)."""
        return Location(node.yml_path, self.line_of(node.yml_path, node, list(steps), block=False), node.unique_id,
                        None, subject)

    def find(self, file: str, node: Node | None, steps: Sequence[Step], *,
             block: bool = True) -> tuple[yaml.Node, int] | None:
        """`steps` under the node's yml entry (under its mxcp block when `block`), wherever dbt read it from."""
        if node is None:
            return None
        blocks: list[list[Step]] = [["config", "meta", "mxcp"], ["meta", "mxcp"]] if block else [[]]
        for entry in _entry_steps(node):
            for prefix in blocks:
                found = self.yml.find(file, [*entry, *prefix, *steps])
                if found is not None:
                    return found
        return None

    def line_of(self, file: str, node: Node | None, steps: list[Step], *, block: bool = True) -> int | None:
        """The line of `steps`, or of the nearest enclosing part that exists (at worst the node's entry)."""
        for cut in range(len(steps), -1, -1):
            found = self.find(file, node, steps[:cut], block=block)
            if found is not None:
                return found[1]
        found = self.find(file, node, [], block=False)
        return found[1] if found else None


def _own(kind: str, name: str) -> list[Step]:
    """The steps from an mxcp block to an endpoint's declaration (a resource is found by its uri)."""
    return [f"{kind}s", ("uri", name) if kind == "resource" else ("name", name)]


def _entry_steps(node: Node) -> list[list[Step]]:
    """The yml paths to a node's entry; a source table's block may also sit on its source."""
    if node.resource_type == "source":
        source: list[Step] = ["sources", ("name", str(node.data.get("source_name")))]
        return [[*source, "tables", ("name", node.name)], source]
    return [[SECTIONS.get(node.resource_type, node.resource_type + "s"), ("name", node.name)]]


def _served(ctx: Context, *kinds: str) -> Iterator[Endpoint]:
    return (e for e in ctx.endpoints if e.kind in kinds)


def _row(t: TypeDef | None) -> TypeDef | None:
    """The type of one row: an array's items, else the type itself."""
    return t.items if t is not None and t.type == "array" else t


def _derived(e: Endpoint) -> bool:
    """Whether the endpoint's row fields come from its host's dbt columns (see registry._return_type)."""
    if e.source_kind not in ("model", "table_function"):
        return False
    row = _row(e.declared_return)
    return e.declared_return is None or row is None or (row.type == "object" and row.properties is None)


def _names(items: Sequence[str]) -> str:
    return ", ".join(items)


# ---- declarations ------------------------------------------------------------------------------

@rule("invalid-declaration", "error", "an endpoint declaration that dbt-mxcp rejects",
      "fix the declaration as the message says; `dbt parse` fails with the same message")
def _invalid_declaration(ctx: Context) -> Iterator[Issue]:
    for problem in ctx.loaded.problems:
        node = ctx.node(problem.node)
        kind, _, name = problem.endpoint.partition(" ")
        # The label is "tool name" (or "tool #2" when the declaration has no usable name).
        steps = _own(kind, name) if kind in ("tool", "resource", "prompt") and not name.startswith("#") else []
        yield Issue(Location(problem.file, ctx.line_of(problem.file, node, steps), problem.node,
                             problem.endpoint or None), problem.message)


# ---- descriptions ------------------------------------------------------------------------------

@rule("endpoint-description", "error", "an endpoint with no description, and none on its dbt node",
      "add `description:` saying what the endpoint does and when to use it: it is all a model has to choose it")
def _endpoint_description(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        if not e.description:
            yield Issue(ctx.at(e), f"no description, and {e.node_id} has none to fall back on")


@rule("endpoint-description-from-dbt", "info", "an endpoint whose description is its dbt node's",
      "write the endpoint its own `description:`")
def _endpoint_description_from_dbt(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        if e.description and not ctx.raw(e).get("description"):
            yield Issue(ctx.at(e), f"no description of its own: clients see the description of {e.node_id}",
                        f"the description of {e.node_id} ({_short(e.description)}) says what the node holds, not "
                        f"what the {e.kind} does or when to call it: write one under `description:`")


def _uri_column(ctx: Context, e: Endpoint, p: Parameter) -> tuple[Node, Mapping[str, Any]] | None:
    """The dbt column a resource's undeclared URI parameter is typed from (see registry._uri_parameter)."""
    if e.kind != "resource" or ctx.raw(e).get("parameters") is not None:
        return None
    node = ctx.node(e.node_id)
    col = node.columns.get(p.name) if node is not None else None
    return (node, col) if node is not None and col is not None else None


@rule("parameter-description", "warning", "a parameter with no description",
      "add `description:` to the parameter: what it means, its unit, and how it filters")
def _parameter_description(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        for p in e.client_parameters:
            if not p.description:
                found = _uri_column(ctx, e, p)
                yield Issue(ctx.at(e, "parameters", ("name", p.name), subject=f"parameter {p.name}"),
                            "no description: a model has only the name to guess what to send",
                            f"describe column {p.name} of {found[0].unique_id} (the URI parameter is typed from "
                            "it), or declare the parameter under `parameters:`" if found else None)


@rule("parameter-description-from-dbt", "info", "a URI parameter described by its dbt column's description",
      "declare `parameters:` with a description written for callers, if the column's does not suit them")
def _parameter_description_from_dbt(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        for p in e.client_parameters:
            found = _uri_column(ctx, e, p)
            if p.description and found is not None:
                yield Issue(ctx.at(e, subject=f"parameter {p.name}"),
                            f"described by column {p.name} of {found[0].unique_id}: {_short(p.description)}")


def _documented(ctx: Context, e: Endpoint, name: str) -> Node | None:
    """A node the endpoint reads (its host first) that documents a column `name`."""
    for uid in dict.fromkeys([e.node_id, *e.relations]):
        node = ctx.node(uid)
        if node is not None and (node.columns.get(name) or {}).get("description"):
            return node
    return None


@rule("return-description", "warning", "a return type missing, or without descriptions of its fields",
      "declare `return:` with a `description:` on each field (the output schema is how a model reads results)")
def _return_description(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        t = e.return_type
        if t is None and e.source_kind in ("model", "table_function"):
            yield Issue(ctx.at(e, subject="return"), f"no return type, and no column of {e.node_id} has a "
                                                     "data_type to derive one from: clients get no output schema",
                        f"add `data_type:` to the columns of {e.node_id} (dbt-mxcp derives the output schema from "
                        "them), or declare `return:`")
        elif t is None:
            yield Issue(ctx.at(e, subject="return"), "declares no return type: clients get no output schema")
        elif not _derived(e):  # derived fields are dbt columns: undocumented-column speaks for them
            yield from _field_descriptions(ctx, e, t)


def _field_descriptions(ctx: Context, e: Endpoint, t: TypeDef) -> Iterator[Issue]:
    row = _row(t)
    where = ctx.at(e, "return", subject="return")
    if row is None or (row.type == "object" and row.properties is None):
        yield Issue(where, "the return type declares no fields")
    elif row.type != "object":
        if not (row.description or t.description):
            yield Issue(where, f"the returned {row.type} has no description")
    elif missing := [n for n, prop in (row.properties or {}).items() if not prop.description]:
        docs: dict[str, list[str]] = {}
        for name in missing:
            if (node := _documented(ctx, e, name)) is not None:
                docs.setdefault(node.unique_id, []).append(name)
        hint = None
        if docs:
            hint = "dbt documents " + "; ".join(f"{_names(names)} on {uid}" for uid, names in docs.items()) + \
                   ": copy those descriptions into the return type (dbt-mxcp does not merge dbt docs into a " \
                   "declared type), and describe the rest"
        yield Issue(where, f"field(s) without a description: {_names(missing)}", hint)


@rule("return-description-from-dbt", "info", "return fields described by the dbt columns they come from",
      "keep the dbt column descriptions written for callers: they are the output schema's")
def _return_description_from_dbt(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        row = _row(e.return_type)
        node = ctx.node(e.node_id)
        if _derived(e) and row is not None and node is not None:
            described = [n for n, prop in (row.properties or {}).items() if prop.description]
            if described:
                yield Issue(ctx.at(e, subject="return"), f"field descriptions come from the dbt columns of "
                                                         f"{node.unique_id}: {_names(described)}")


@rule("undocumented-column", "warning", "a returned dbt column with no description",
      "add a `description:` to the column in the node's yml: it becomes the field's description")
def _undocumented_column(ctx: Context) -> Iterator[Issue]:
    users: dict[tuple[str, str], list[str]] = {}
    for e in _served(ctx, "tool", "resource"):
        node = ctx.node(e.node_id)
        if node is not None and _derived(e):
            for name, col in node.columns.items():
                if not col.get("description"):
                    users.setdefault((node.unique_id, name), []).append(e.label)
    for (uid, name), labels in users.items():
        node = ctx.node(uid)
        if node is not None:
            yield Issue(ctx.at_node(node, "columns", ("name", name), subject=f"column {name}"),
                        f"undocumented, and returned by {_names(labels)}: the field reaches clients unexplained")


@rule("truncated-data-type", "error", "a column `data_type` cut at a comma by YAML",
      "quote the type: `data_type: \"decimal(10,2)\"` (in a `{...}` mapping YAML splits at the comma)")
def _truncated_data_type(ctx: Context) -> Iterator[Issue]:
    for node in ctx.manifest.hosts():
        for name, col in node.columns.items():
            data_type = str(col.get("data_type") or "")
            if data_type.count("(") != data_type.count(")"):
                yield Issue(ctx.at_node(node, "columns", ("name", name), subject=f"column {name}"),
                            f"data_type is {data_type!r}: dbt and DuckDB read a different type than written")


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


# ---- parameters --------------------------------------------------------------------------------

def _closed(p: TypeDef) -> bool:
    """Whether the parameter's values are already spelled out (an enum, a boolean)."""
    return bool(p.enum or (p.items is not None and p.items.enum) or p.type == "boolean")


@rule("missing-example", "warning", "a parameter with no `examples` (nor an enum or a default to go by)",
      "add `examples:` with one or two typical values, in the exact format the SQL expects")
def _missing_example(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        for p in e.client_parameters:
            if not p.examples and not _closed(p) and not (p.has_default and p.default is not None):
                yield Issue(ctx.at(e, "parameters", ("name", p.name), subject=f"parameter {p.name}"),
                            "no examples: a model has to guess the format and a realistic value",
                            "the parameter comes from the URI: declare it under `parameters:` (name, type, "
                            "description) with `examples:`" if _uri_column(ctx, e, p) else None)


# Name parts that usually stand for a small closed set of values (singular; plurals match too).
ENUM_WORDS = frozenset({"status", "state", "type", "kind", "category", "country", "region", "currency", "segment",
                        "tier", "level", "priority", "role", "gender", "channel", "mode", "stage", "grade", "plan",
                        "language", "locale", "severity", "method"})
_COLUMN = r"(?:[A-Za-z_]\w*\s*\.\s*)?([A-Za-z_]\w*)"


def _enum_word(name: str) -> str | None:
    """The part of `name` (snake_case or camelCase) that makes it sound enum-like."""
    for part in re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().split("_"):
        for word in (part, part.removesuffix("s"), part.removesuffix("es"), re.sub(r"ies$", "y", part)):
            if word in ENUM_WORDS:
                return word
    return None


def _compared_columns(sql: str, param: str) -> list[str]:
    """Columns the SQL compares `$param` with: ``col = $p``, ``$p = col``, ``col in ($p)``,
    ``col = any($p)``, ``list_contains($p, col)``."""
    p = rf"\${re.escape(param)}(?!\w)"
    patterns = (rf"{_COLUMN}\s*(?:==?|<>|!=|\bi?like\b|\bin\s*\(|=\s*any\s*\()\s*{p}",
                rf"{p}\s*(?:==?|<>|!=)\s*{_COLUMN}", rf"list_contains\s*\(\s*{p}\s*,\s*{_COLUMN}")
    found: list[str] = []
    for pattern in patterns:
        found += [m.group(1) for m in re.finditer(pattern, sql, re.IGNORECASE)]
    return list(dict.fromkeys(found))


@rule("enum-like-parameter", "warning", "a string parameter that looks like a closed set of values but has no enum",
      "add `enum:` listing the accepted values, so a model picks one instead of inventing a spelling")
def _enum_like_parameter(ctx: Context) -> Iterator[Issue]:
    for e in ctx.endpoints:
        code = _code(e.sql) if e.sql and e.source_kind in ("file", "code", "analysis") else ""
        for p in e.client_parameters:
            item = p.items if p.type == "array" else p
            if item is None or item.type != "string" or item.enum or item.format:
                continue
            columns = [p.name] if e.source_kind == "model" else _compared_columns(code, p.name)
            reason, hint = None, None
            for column in columns:
                for uid in e.relations:
                    values = ctx.accepted_values.get((uid, column))
                    if values is not None:
                        reason = f"compared with {column} of {uid}, which dbt's accepted_values test limits to " \
                                 f"{len(values)} values"
                        hint = f"add `enum: {json.dumps(values)}` (from the accepted_values test on {column})"
                        break
                if reason:
                    break
            word = _enum_word(p.name) or next((w for c in columns if (w := _enum_word(c))), None)
            if reason is None and word is not None:
                reason = f"named like a {word}"
            if reason is not None:
                yield Issue(ctx.at(e, "parameters", ("name", p.name), subject=f"parameter {p.name}"),
                            f"looks enum-like ({reason}) but declares no enum", hint)


# ---- tests and contracts -----------------------------------------------------------------------

@rule("missing-tests", "warning", "a tool or resource with no `tests`",
      "add `tests:` with at least one call and its expected result; run them with `dbt-mxcp test`")
def _missing_tests(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        if not getattr(e.spec, "tests", None):
            yield Issue(ctx.at(e), "no tests: nothing shows it still answers as intended after a change")


@rule("contract-not-enforced", "warning", "a model-backed endpoint on a model without an enforced contract",
      "add `config: {contract: {enforced: true}}` to the model so that dbt checks the columns and data_types "
      "its output schema is built from")
def _contract_not_enforced(ctx: Context) -> Iterator[Issue]:
    users: dict[str, list[str]] = {}
    for e in _served(ctx, "tool", "resource"):
        # A table_function (a DuckDB macro) cannot enforce a contract: validate is its check.
        if e.source_kind == "model" and e.node_type == "model":
            users.setdefault(e.node_id, []).append(e.label)
    for uid, labels in users.items():
        node = ctx.node(uid)
        if node is not None and not (node.config.get("contract") or {}).get("enforced"):
            yield Issue(ctx.at_node(node, subject="contract"),
                        f"contract not enforced, yet the output schema of {_names(labels)} is derived from its "
                        "documented columns: a changed column would silently change what clients get")


# ---- SQL ---------------------------------------------------------------------------------------

def _code(sql: str) -> str:
    """`sql` with strings and comments blanked and identifier quotes dropped, newlines and offsets kept."""
    parts = []
    for start, end, is_code in _spans(sql):
        text = sql[start:end]
        if is_code:
            parts.append(text)
        elif text.startswith('"'):
            parts.append(" " + text[1:-1].replace('""', ' "') + " ")  # "a b" -> ` a b `: same length
        else:
            parts.append(re.sub(r"[^\n]", " ", text))
    return "".join(parts)


_STAR = re.compile(r"(?:\bselect(?:\s+distinct|\s+all)?|,)\s*(?:[\w$]+\s*\.\s*)?(\*)", re.IGNORECASE)
_BARE_FROM = re.compile(r"\s*(from)\b", re.IGNORECASE)  # DuckDB's `from t` means `select * from t`


def select_stars(sql: str) -> list[int]:
    """Offsets of the stars that pick the result's columns (``select *``, ``select t.*``, ``, *``, or
    DuckDB's bare ``from t``), outside strings, comments and parentheses (CTEs, subqueries)."""
    code = _code(sql)
    bare = _BARE_FROM.match(code)
    if bare:
        return [bare.start(1)]
    depth, depths = 0, []
    for ch in code:
        depth += (ch == "(") - (ch == ")")
        depths.append(depth)
    return [m.start(1) for m in _STAR.finditer(code) if depths[m.start(1)] == 0]


def _has_star(code: str) -> bool:
    """Whether blanked SQL (see `_code`) selects a star anywhere, subqueries included."""
    return _STAR.search(code) is not None or _BARE_FROM.match(code) is not None


def _sql_location(ctx: Context, e: Endpoint, offset: int, subject: str) -> Location:
    """Where `offset` of the endpoint's SQL is: its SQL file, its analysis, or its inline code in the yml."""
    line = (e.sql or "")[:offset].count("\n")
    node = ctx.node(e.node_id)
    if e.source_kind == "file" and e.source_file:
        return Location(e.source_file, line + 1, e.node_id, e.label, subject)
    if e.source_kind == "analysis" and node is not None:
        return Location(str(node.data.get("original_file_path") or e.yml_path), line + 1, e.node_id, e.label,
                        subject)
    found = ctx.find(e.yml_path, node, [*_own(e.kind, e.name), "source", "code"])
    if found is None:
        return ctx.at(e, "source", subject=subject)
    # A block scalar (code: |) starts on the line after its key.
    block = isinstance(found[0], yaml.ScalarNode) and found[0].style in ("|", ">")
    return Location(e.yml_path, found[1] + block + line, e.node_id, e.label, subject)


@rule("select-star", "warning", "`select *` choosing the columns of endpoint SQL",
      "list the columns: a new upstream column (perhaps a sensitive one) would otherwise reach clients unseen")
def _select_star(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        if e.sql and e.source_kind in ("file", "code", "analysis"):
            for offset in select_stars(e.sql):
                yield Issue(_sql_location(ctx, e, offset, "select *"),
                            "selects *: the result's columns are whatever its relations hold today")


# ---- sensitive data ----------------------------------------------------------------------------

def _returned_sensitive(e: Endpoint) -> list[str]:
    """The endpoint's sensitive paths that can reach a caller: declared in its return type, or a sensitive
    column of a relation it reads that its SQL names or selects with a star."""
    declared = set(e.return_type.sensitive_paths()) if e.return_type is not None else set()
    row = _row(e.return_type)
    closed = row.properties if row is not None and row.additional_properties is False else None
    code = _code(e.sql) if e.sql and e.source_kind in ("file", "code", "analysis") else ""

    def reaches(path: str) -> bool:
        column = path.split(".")[0]
        if path in declared:
            return True
        if closed is not None and column not in closed:
            return False  # the result check refuses any other column
        return not code or _has_star(code) or re.search(rf"(?<![\w$]){re.escape(column)}(?!\w)", code,
                                                         re.IGNORECASE) is not None

    return [p for p in e.sensitive_paths if reaches(p)]


def _covers(r: PolicyRule, path: str) -> bool:
    if r.action == "filter_sensitive_fields":
        return True
    return r.action in ("filter_fields", "mask_fields") and any(
        path == f or path.startswith(f + ".") for f in r.fields or [])


@rule("unprotected-sensitive-field", "error", "a sensitive field returned with no output policy acting on it",
      "add an output policy, e.g. `{condition: \"user.role != 'admin'\", action: filter_sensitive_fields}`, or "
      "mask_fields/filter_fields naming the field")
def _unprotected_sensitive(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        open_ = [p for p in _returned_sensitive(e) if not any(_covers(r.rule, p) for r in e.output_rules)]
        if open_:
            yield Issue(ctx.at(e, "policies", subject="policies.output"),
                        f"returns sensitive field(s) {_names(open_)} to every caller: no output policy filters or "
                        "masks them")


# ---- policies: CEL reads of fields that may be absent or null ----------------------------------

class Read(NamedTuple):
    """A variable and the fields selected from it, with the tokens around it (to judge how it is used)."""

    path: tuple[str, ...]
    before: str
    after: str
    call: str  # the function the selection is an argument of, directly ('' if none)


def cel_reads(condition: str) -> tuple[list[Read], set[tuple[str, ...]], set[tuple[str, ...]]]:
    """The selections of a condition, the paths it tests with has() (or ``'key' in x``), and the paths it
    compares with null (tokenized as the policy cost bound tokenizes it)."""
    try:
        toks = tokens(condition)
    except TooCostly:
        return [], set(), set()  # such a condition fails to load: invalid-declaration reports it
    kinds, texts = [k for k, _ in toks], [t for _, t in toks]
    reads: list[Read] = []
    present: set[tuple[str, ...]] = set()
    null_checked: set[tuple[str, ...]] = set()
    i = 0
    while i < len(toks):
        # A variable starts a selection; a function call (name followed by "(") does not.
        if kinds[i] != "ident" or (i and texts[i - 1] == ".") or texts[i + 1:i + 2] == ["("]:
            i += 1
            continue
        path, j = [texts[i]], i + 1
        while j < len(toks):
            if texts[j] == "." and kinds[j + 1:j + 2] == ["ident"] and texts[j + 2:j + 3] != ["("]:
                path.append(texts[j + 1])  # a field; a method call ends the selection
                j += 2
            elif texts[j] == "[" and kinds[j + 1:j + 2] == ["str"] and texts[j + 2:j + 3] == ["]"]:
                path.append(_unquote(texts[j + 1]))
                j += 3
            else:
                break
        before = texts[i - 1] if i else ""
        after = texts[j] if j < len(toks) else ""
        call = texts[i - 2] if before == "(" and i >= 2 and kinds[i - 2] == "ident" else ""
        if call == "has":
            present.add(tuple(path))
        else:
            if before == "in" and i >= 2 and kinds[i - 2] == "str":
                present.add((*path, _unquote(texts[i - 2])))
            if (after in ("==", "!=") and texts[j + 1:j + 2] == ["null"]) or (
                    before in ("==", "!=") and i >= 2 and texts[i - 2] == "null"):
                null_checked.add(tuple(path))
            reads.append(Read(tuple(path), before, after, call))
        i = j
    return reads, present, null_checked


def _unquote(text: str) -> str:
    text = text.lstrip("rRbB")
    quote = text[:3] if text[:3] in ("'''", '"""') else text[:1]
    return text[len(quote):len(text) - len(quote)]


class Root(NamedTuple):
    """What a condition's variable holds: its type, whether it may be null itself, and whether every
    declared field is always there (a SQL row holds every column)."""

    type: TypeDef | None
    nullable: bool = False
    every_field: bool = False


# The caller as policies see it (see user.make_user): id, email and name may be null; claims hold anything.
_NULLABLE_USER_FIELDS = ("id", "email", "name")
USER_TYPE = TypeDef(type="object", additional_properties=False, required=list(STANDARD_FIELDS), properties={
    f: TypeDef(type="object") if f == "claims" else TypeDef(type="array") if f in ("groups", "scopes")
    else TypeDef(type="string", nullable=f in _NULLABLE_USER_FIELDS) for f in STANDARD_FIELDS})
USER_ROOT = Root(USER_TYPE, every_field=True)
_UNSAFE_NEAR_NULL = {".", "[", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "!"}


def _field_state(t: TypeDef | None, name: str, every_field: bool) -> tuple[str, TypeDef | None]:
    """Whether field `name` of a value of type `t` is there: ok, absent (may be missing), null (may be
    null) or invalid (never there); and the field's type when known."""
    if t is None or (t.type == "object" and t.properties is None):
        return "absent", None
    if t.type != "object":
        return "invalid", None
    prop = t.properties.get(name) if t.properties is not None else None
    if prop is None:
        return ("invalid" if t.additional_properties is False else "absent"), None
    if not every_field and name not in (t.required or []):
        return "absent", prop
    return ("null" if prop.nullable else "ok"), prop


def unguarded_fields(condition: str, roots: Mapping[str, Root]) -> list[tuple[str, str]]:
    """(path, what is wrong) for each read of a variable in `roots` that may fail on a missing or null
    value the condition does not guard."""
    reads, present, null_checked = cel_reads(condition)
    out = []
    for read in reads:
        root = roots.get(read.path[0])
        found = _unguarded(read, root, present, null_checked) if root is not None else None
        if found is not None and found not in out:
            out.append(found)
    return out


def _unguarded(read: Read, root: Root, present: set[tuple[str, ...]],
               null_checked: set[tuple[str, ...]]) -> tuple[str, str] | None:
    # (state, path, type of the value the field was selected from), from the root down to the first
    # field that may be missing.
    states: list[tuple[str, tuple[str, ...], TypeDef | None]] = [("null" if root.nullable else "ok", read.path[:1],
                                                                 None)]
    t = root.type
    for k, name in enumerate(read.path[1:], start=2):
        parent = t
        state, t = _field_state(parent, name, root.every_field)
        states.append((state, read.path[:k], parent))
        if state in ("absent", "invalid"):
            break
    for k, (state, path, parent) in enumerate(states):
        dotted = ".".join(path)
        deeper = k + 1 < len(read.path)
        if state == "invalid":
            return dotted, "is never there: " + _invalid_reason(path, parent)
        if state == "absent" and not any(g[:len(path)] == path and read.path[:len(g)] == g for g in present):
            return dotted, f"may be absent; guard it: has({dotted}) && ..."
        if state == "null" and path not in null_checked and (deeper or read.after in _UNSAFE_NEAR_NULL or read.before
                                                             in _UNSAFE_NEAR_NULL or read.call not in ("", "has")):
            return dotted, f"may be null; guard it: {dotted} != null && ..."
    return None


def _invalid_reason(path: tuple[str, ...], parent: TypeDef | None) -> str:
    """Why field path[-1] is never on the value at path[:-1], of type `parent`."""
    holder = ".".join(path[:-1])
    if parent is not None and parent.type != "object":
        rows = " of rows: test them with response.all(r, ...) or response.exists(r, ...)" \
            if path[:-1] == ("response",) and parent.type == "array" else ""
        return f"{holder} is a{'n' if parent.type[0] in 'aeiou' else ''} {parent.type}{rows}"
    if path[:-1] == ("user",):
        return f"the caller has no field '{path[-1]}' (custom claims are under user.claims.{path[-1]})"
    return f"{holder} has no field '{path[-1]}' (additional_properties: false)"


def _policy_sources(ctx: Context, e: Endpoint) -> Iterator[tuple[str, PolicyRule, Location]]:
    """(phase, rule, location) of every policy rule an endpoint runs: its policy sets' (located in
    mxcp.yml) and its own."""
    policies: Policies | None = getattr(e.spec, "policies", None)
    if policies is None:
        return
    for name in policies.use:
        used = ctx.loaded.settings.policy_sets.get(name)
        for phase in ("input", "output"):
            for i, r in enumerate(getattr(used, phase, None) or []):
                found = ctx.yml.find(SETTINGS_FILE, ["policy_sets", name, phase])
                line = None
                if found is not None and isinstance(found[0], yaml.SequenceNode) and i < len(found[0].value):
                    line = found[0].value[i].start_mark.line + 1
                yield phase, r, Location(SETTINGS_FILE, line, None, None, f"policy_sets.{name}.{phase}[{i}]")
    for phase in ("input", "output"):
        for i, r in enumerate(getattr(policies, phase)):
            yield phase, r, ctx.at(e, "policies", phase, subject=f"policies.{phase}[{i}]")


@rule("unguarded-policy-field", "warning",
      "a policy condition reading a field that may be absent or null without guarding it",
      "guard the read: has(user.claims.x) && ... for a field that may be missing, x != null && ... for one "
      "that may be null")
def _unguarded_policy_field(ctx: Context) -> Iterator[Issue]:
    for e in _served(ctx, "tool", "resource"):
        params = {p.name: Root(p, p.has_default and p.default is None and p.bind is None) for p in e.parameters}
        response = Root(e.return_type, every_field=e.source_kind != "python")
        for phase, r, loc in _policy_sources(ctx, e):
            roots = {**params, "user": USER_ROOT, **({"response": response} if phase == "output" else {})}
            for path, problem in unguarded_fields(r.condition, roots):
                yield Issue(loc, f"{path} {problem} (condition: {r.condition!r}); an error here denies the call")


# ---- yml placement: what dbt on DuckDB drops, keeps unread or moves ----------------------------
#
# Found by building projects with dbt-core 1.11 and dbt-duckdb (docs/lint.md has the table). dbt
# checks properties against its JSON schema, and warns about misplaced keys, only on BigQuery,
# Databricks, Redshift and Snowflake; on DuckDB every case below is silent.

_ENTRY = r"(?:(?:models|seeds|snapshots|analyses|exposures)/\*(?:/versions/\*)?|sources/\*/tables/\*)"
_COLUMN_PATH = rf"{_ENTRY}/columns/\*"
_SINGULAR = {"models": "model", "seeds": "seed", "snapshots": "snapshot", "analyses": "analysis",
             "exposures": "exposure", "sources": "source", "tables": "table", "columns": "column",
             "versions": "version"}
_MOVE = "move it under `config: meta: mxcp:` of the model, seed, snapshot, analysis, source table or exposure " \
        "(of the column, for `sensitive`)"


def _yml_files(ctx: Context) -> list[str]:
    """The project's own yml files that dbt read (the ones its nodes, sources, macros... came from)."""
    files: set[str] = set()
    for section in ctx.manifest.data.values():
        for item in section.values() if isinstance(section, Mapping) else ():
            if isinstance(item, Mapping) and item.get("package_name") == ctx.manifest.project_name:
                for key in ("patch_path", "original_file_path"):
                    path = str(item.get(key) or "").split("://", 1)[-1]
                    if path.endswith((".yml", ".yaml")):
                        files.add(path)
    return sorted(files)


class YmlKey(NamedTuple):
    """A mapping key of a yml file, with the way to it."""

    path: str  # keys joined by '/', list items as '*'
    names: tuple[tuple[str, str], ...]  # (section, name) of each named list item on the way
    line: int
    value: yaml.Node


def _keys(node: yaml.Node, path: str = "", names: tuple[tuple[str, str], ...] = ()) -> Iterator[YmlKey]:
    """Every mapping key of a yml tree; the inside of an `mxcp` block is not walked."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                here = f"{path}/{k.value}" if path else str(k.value)
                yield YmlKey(here, names, k.start_mark.line + 1, v)
                if k.value != "mxcp":
                    yield from _keys(v, here, names)
    elif isinstance(node, yaml.SequenceNode):
        section = path.rsplit("/", 1)[-1]
        for item in node.value:
            name = _scalar(item, "name") or _scalar(item, "v") or "?"
            yield from _keys(item, f"{path}/*", (*names, (section, name)))


def _placement(ctx: Context, pattern: str) -> Iterator[tuple[str, YmlKey]]:
    """(file, key) of every key of the project's yml files whose path matches `pattern`."""
    compiled = re.compile(pattern)
    return ((file, key) for file, key in ctx.yml_keys if compiled.fullmatch(key.path))


def _declares_endpoints(node: yaml.Node) -> bool:
    """Whether a yml value looks like endpoint declarations: a list of mappings with a name or uri."""
    return isinstance(node, yaml.SequenceNode) and any(
        _scalar(item, "name") is not None or _scalar(item, "uri") is not None for item in node.value)


def _where(key: YmlKey) -> str:
    return ", ".join(f"{_SINGULAR.get(section, section)} {name}" for section, name in key.names)


_MISPLACED = (
    (rf"{_ENTRY}/mxcp", "dbt drops an `mxcp:` key written directly on a {what}: its endpoints are never declared"),
    (rf"{_ENTRY}/config/mxcp", "dbt keeps `config.mxcp` as a custom config that dbt-mxcp never reads: its "
                               "endpoints are never declared"),
    (rf"{_COLUMN_PATH}/mxcp", "dbt keeps `mxcp:` written directly on a column as an unknown property that "
                              "dbt-mxcp never reads: `sensitive` does not apply"),
    (rf"{_COLUMN_PATH}/config/mxcp", "dbt drops `config.mxcp` on a column: `sensitive` does not apply"),
    (rf"{_ENTRY}/(?:config/)?meta/(?:tools|resources|prompts)",
     "dbt-mxcp reads endpoints from `meta.mxcp.tools` (resources, prompts), not from `meta` itself: these are "
     "never declared"),
)
_READ = re.compile(rf"(?:{_ENTRY}|{_COLUMN_PATH}|sources/\*)/(?:config/)?meta/mxcp")


@rule("misplaced-mxcp", "error", "an mxcp block where dbt drops it or dbt-mxcp never reads it", _MOVE)
def _misplaced_mxcp(ctx: Context) -> Iterator[Issue]:
    for file, key in _placement(ctx, r".*/(?:mxcp|tools|resources|prompts)"):
        if _READ.fullmatch(key.path) or (not key.path.endswith("/mxcp") and not _declares_endpoints(key.value)):
            continue
        message = next((m for p, m in _MISPLACED if re.fullmatch(p, key.path)), None)
        if message is None and key.path.endswith("/mxcp"):
            message = "dbt-mxcp never reads an mxcp block here"
        if message is not None:
            what = _SINGULAR.get(key.names[-1][0], "node") if key.names else "node"
            yield Issue(Location(file, key.line, subject=_where(key) or key.path.replace("/*", "")),
                        message.format(what=what))


@rule("top-level-meta", "info", "an mxcp block under a top-level `meta:`, which dbt moves into config.meta",
      "write it as `config: meta: mxcp:`, the place dbt documents")
def _top_level_meta(ctx: Context) -> Iterator[Issue]:
    for file, key in _placement(ctx, rf"(?:{_ENTRY}|{_COLUMN_PATH})/meta/mxcp"):
        yield Issue(Location(file, key.line, subject=_where(key)),
                    "top-level `meta:` works (dbt copies it into config.meta), but dbt's schema calls it "
                    "deprecated, and a model with both `meta:` and `config.meta` fails to parse")


@rule("source-level-mxcp", "warning", "an mxcp block on a source rather than on one of its tables",
      "move the block to `config: meta: mxcp:` of the table it serves")
def _source_level_mxcp(ctx: Context) -> Iterator[Issue]:
    for file, key in _placement(ctx, r"sources/\*/(?:config/)?meta/mxcp"):
        yield Issue(Location(file, key.line, subject=_where(key)),
                    "dbt copies a source's meta into every one of its tables without an mxcp block of their own, "
                    "so each declares these endpoints (a duplicate name once there are two); a top-level `meta:` "
                    "beside `config.meta` here is dropped")


@rule("ignored-tags", "warning", "top-level `tags:` on a model, seed, snapshot or analysis, which dbt drops",
      "move them under `config: tags:`")
def _ignored_tags(ctx: Context) -> Iterator[Issue]:
    for file, key in _placement(ctx, r"(?:models|seeds|snapshots|analyses)/\*/tags"):
        yield Issue(Location(file, key.line, subject=_where(key)),
                    "dbt ignores top-level `tags:` here (it reads config.tags): `tag:` selection never picks "
                    "this node, for dbt or for `dbt-mxcp test`")
