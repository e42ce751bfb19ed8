"""Drift: the contract AI clients depend on, snapshotted and compared, as dbt's state:modified does for models.

A *snapshot* records every endpoint's contract — parameters and their JSON Schemas, the return
schema, its policies, its description — and the columns of every relation an endpoint reads
(from the manifest, and from DuckDB itself when the warehouse is reachable). A *check* compares
two snapshots and classifies each change as **breaking** (a client built against the old
contract can fail or see more than before) or **non-breaking** (reported: a description is an
instruction to the model too). Live drift compares the manifest with the warehouse it describes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .registry import Endpoint, Registry

SCHEMA_VERSION = 1
DEFAULT_FILE = "mxcp_drift.json"  # under the target path
Severity = Literal["breaking", "non-breaking"]
# Keywords whose larger value accepts fewer arguments (a narrowing when it grows), and the reverse.
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_RELATION_TYPES = ("model", "seed", "snapshot", "source")
_NO_RELATION = ("ephemeral", "table_function")  # materializations that build no table or view


@dataclass(frozen=True)
class Change:
    """One difference between the baseline and now."""

    severity: Severity
    kind: str  # a stable id, e.g. parameter_added_required
    message: str
    endpoint: str | None = None  # `kind name`
    node: str | None = None
    yml_path: str | None = None


# ---- snapshots -----------------------------------------------------------------------------------


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _rules(endpoint: Endpoint) -> dict[str, list[dict[str, Any]]]:
    return {phase: [c.rule.model_dump(exclude_none=True) for c in rules]
            for phase, rules in (("input", endpoint.input_rules), ("output", endpoint.output_rules))}


def endpoint_contract(endpoint: Endpoint) -> dict[str, Any]:
    """What a client depends on in one endpoint, as plain JSON."""
    parameters = [{"name": p.name, "schema": p.json_schema(), "required": not p.has_default,
                   "description": p.description} for p in endpoint.client_parameters]
    policies = _rules(endpoint)
    return {"kind": endpoint.kind, "name": endpoint.name, "node": endpoint.node_id, "yml_path": endpoint.yml_path,
            "enabled": endpoint.enabled, "parameters": parameters, "return": endpoint.return_schema(),
            "policies": policies, "policies_hash": _digest(policies),
            "description": endpoint.description, "description_hash": _digest(endpoint.description or ""),
            "relations": sorted(endpoint.relations)}


def relation_columns(manifest: Any, unique_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The declared columns (name -> data_type, lowercased; None when undeclared) of these relations."""
    out: dict[str, dict[str, Any]] = {}
    for uid in sorted(set(unique_ids)):
        node = manifest.node(uid)
        if node is None:
            continue
        out[uid] = {"relation": node.relation_name, "yml_path": node.yml_path, "columns": {
            name.lower(): (str(col.get("data_type")).lower() if col.get("data_type") else None)
            for name, col in node.columns.items()}, "from": "manifest"}
    return out


def _relation_key(node: Any) -> tuple[str, str, str] | None:
    data = node.data
    name = data.get("alias") or data.get("identifier") or data.get("name")
    if not (data.get("database") and data.get("schema") and name):
        return None
    return str(data["database"]).lower(), str(data["schema"]).lower(), str(name).lower()


def snapshot(registry: Registry, manifest: Any, *, actual: Mapping[tuple[str, str, str], Mapping[str, str]]
             | None = None, project: str | None = None) -> dict[str, Any]:
    """The baseline: every endpoint's contract and the columns of the relations they read.

    With `actual` (from `Warehouse.columns`) a relation's columns are the warehouse's, else the
    manifest's declared ones.
    """
    endpoints = sorted((endpoint_contract(e) for e in registry.all(include_disabled=True)),
                       key=lambda c: (c["kind"], c["name"]))
    read = {uid for c in endpoints for uid in c["relations"]}
    relations = relation_columns(manifest, read)
    if actual is not None:
        for uid, info in relations.items():
            node = manifest.node(uid)
            key = _relation_key(node) if node is not None else None
            if key is not None and key in actual:
                info.update(columns=dict(actual[key]), **{"from": "warehouse"})
    metadata = getattr(manifest, "data", {}).get("metadata", {})
    return {"schema_version": SCHEMA_VERSION, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "project": project, "dbt_invocation_id": metadata.get("invocation_id"),
            "endpoints": endpoints, "relations": relations}


def write_snapshot(data: Mapping[str, Any], path: Path) -> None:
    """Write a snapshot with stable ordering (reviewable in git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_snapshot(path: Path) -> dict[str, Any]:
    """A snapshot written by `drift snapshot`; ConfigError naming what is wrong."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no drift baseline at {path}: make one with `dbt-mxcp drift snapshot`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the drift baseline {path}: {exc}") from None
    if not isinstance(data, dict) or "endpoints" not in data:
        raise ConfigError(f"{path} is not a drift baseline written by `dbt-mxcp drift snapshot`")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{path} has drift schema version {data.get('schema_version')}; this dbt-mxcp reads "
                          f"version {SCHEMA_VERSION}: make a new baseline with `dbt-mxcp drift snapshot`")
    return data


# ---- comparing -------------------------------------------------------------------------------------


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every change from the `old` snapshot to the `new` one, breaking ones first."""
    changes: list[Change] = []
    before = {(e["kind"], e["name"]): e for e in old["endpoints"]}
    after = {(e["kind"], e["name"]): e for e in new["endpoints"]}
    added: dict[tuple[str, str], list[str]] = {}  # (kind, node) -> names added there, for rename hints
    for key, now in after.items():
        if key not in before:
            added.setdefault((now["kind"], now["node"]), []).append(now["name"])
    for key, was in before.items():
        now = after.get(key)
        if now is not None and _same_contract(was, now):
            continue
        if now is None:
            names = added.get((was["kind"], was["node"]), [])
            hint = f" (renamed to {names[0]}?)" if len(names) == 1 else ""
            changes.append(_change("breaking", "endpoint_removed", f"{_label(was)} was removed{hint}", was))
        elif was["enabled"] and not now["enabled"]:
            changes.append(_change("breaking", "endpoint_disabled", f"{_label(was)} was disabled", now))
        elif now["enabled"] and not was["enabled"]:
            changes.append(_change("non-breaking", "endpoint_enabled", f"{_label(now)} was enabled", now))
        elif now["enabled"]:
            changes += _endpoint_changes(was, now)
    for key, now in after.items():
        if key not in before and now["enabled"]:
            changes.append(_change("non-breaking", "endpoint_added", f"{_label(now)} was added", now))
    changes += _relation_changes(old, new, after)
    return sorted(changes, key=lambda c: (c.severity != "breaking", c.endpoint or "", c.kind))


def _label(e: Mapping[str, Any]) -> str:
    return f"{e['kind']} {e['name']}"


def _change(severity: Severity, kind: str, message: str, e: Mapping[str, Any] | None) -> Change:
    if e is None:
        return Change(severity, kind, message)
    return Change(severity, kind, message, _label(e), e.get("node"), e.get("yml_path"))


def _same_contract(was: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Nothing a client sees changed (the dbt node and yml file may have moved)."""
    return all(was.get(k) == now.get(k) for k in ("enabled", "parameters", "return", "policies_hash",
                                                  "description_hash"))


def _endpoint_changes(was: Mapping[str, Any], now: Mapping[str, Any]) -> Iterator[Change]:
    def change(severity: Severity, kind: str, message: str) -> Change:
        return _change(severity, kind, f"{_label(now)}: {message}", now)

    old_params = {p["name"]: p for p in was["parameters"]}
    new_params = {p["name"]: p for p in now["parameters"]}
    for name, p in old_params.items():
        q = new_params.get(name)
        if q is None:
            yield change("breaking", "parameter_removed", f"parameter {name} was removed (clients sending it fail)")
            continue
        if q["required"] and not p["required"]:
            yield change("breaking", "parameter_became_required", f"parameter {name} is now required")
        for severity, kind, message in _schema_changes(p["schema"], q["schema"], f"parameter {name}", narrowing=True):
            yield change(severity, kind, message)
        if (p.get("description") or "") != (q.get("description") or ""):
            yield change("non-breaking", "parameter_description_changed", f"parameter {name}'s description changed")
    for name, q in new_params.items():
        if name not in old_params:
            if q["required"]:
                yield change("breaking", "parameter_added_required",
                             f"required parameter {name} was added (without a default, old calls fail)")
            else:
                yield change("non-breaking", "parameter_added_optional", f"optional parameter {name} was added")
    yield from (change(s, k, m) for s, k, m in _return_changes(was["return"], now["return"]))
    yield from (change(s, k, m) for s, k, m in _policy_changes(was["policies"], now["policies"]))
    if was["description_hash"] != now["description_hash"]:
        yield change("non-breaking", "description_changed", "the description changed (it instructs the model too)")


def _types(schema: Mapping[str, Any] | None) -> set[str]:
    t = (schema or {}).get("type")
    return set(t) if isinstance(t, list) else {t} if t else set()


def _schema_changes(old: Mapping[str, Any], new: Mapping[str, Any], what: str,
                    narrowing: bool) -> Iterator[tuple[Severity, str, str]]:
    """Changes of one value's schema. For inputs (`narrowing`) accepting less is breaking; for
    outputs, returning anything else is."""
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        if narrowing and new_types >= old_types:
            yield "non-breaking", "parameter_type_widened", f"{what} now also accepts {_show(new_types - old_types)}"
        elif narrowing:
            yield "breaking", "parameter_type_narrowed", f"{what} type changed from {_show(old_types)} to " \
                                                         f"{_show(new_types)}"
        else:
            yield "breaking", "return_type_changed", f"{what} type changed from {_show(old_types)} to " \
                                                     f"{_show(new_types)}"
    old_enum, new_enum = old.get("enum"), new.get("enum")
    if old_enum is not None or new_enum is not None:
        removed = [v for v in old_enum or [] if new_enum is not None and v not in new_enum]
        added = [v for v in new_enum or [] if old_enum is not None and v not in old_enum]
        if narrowing and old_enum is None:
            yield "breaking", "parameter_type_narrowed", f"{what} now accepts only {new_enum}"
        elif removed:
            kind = "enum_value_removed"
            yield ("breaking" if narrowing else "non-breaking"), kind, f"{what} no longer has value(s) {removed}"
        if added:
            yield ("non-breaking" if narrowing else "breaking"), "enum_value_added", f"{what} gained value(s) {added}"
    if narrowing:
        for key in _LOWER_BOUNDS + _UPPER_BOUNDS:
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            tighter = (b is not None and (a is None or (b > a if key in _LOWER_BOUNDS else b < a)))
            if tighter:
                yield "breaking", "parameter_type_narrowed", f"{what} {key} changed from {a} to {b}"
        for key in ("pattern", "format"):
            if old.get(key) != new.get(key) and new.get(key) is not None:
                yield "breaking", "parameter_type_narrowed", f"{what} {key} is now {new.get(key)!r}"
    if "items" in old and "items" in new:
        yield from _schema_changes(old["items"], new["items"], f"{what} items", narrowing)


def _show(types: set[str]) -> str:
    return "/".join(sorted(types)) or "any"


def _columns(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A return schema's row properties: the object's, or an array's item object's (None otherwise)."""
    if not schema:
        return None
    if "object" in _types(schema) and "properties" in schema:
        return dict(schema["properties"])
    items = schema.get("items")
    if "array" in _types(schema) and isinstance(items, Mapping) and "properties" in items:
        return dict(items["properties"])
    return None


def _shape(schema: Mapping[str, Any]) -> str:
    types = _types(schema)
    return "array" if "array" in types else "object" if "object" in types else "scalar"


def _return_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
                    ) -> Iterator[tuple[Severity, str, str]]:
    if old is None or new is None:
        if old is not None:
            yield "breaking", "return_shape_changed", "the return type is no longer declared or derivable"
        elif new is not None:
            yield "non-breaking", "return_declared", "the return type is now known"
        return
    if _shape(old) != _shape(new):
        yield "breaking", "return_shape_changed", f"the result changed from {_shape(old)} to {_shape(new)}"
        return
    old_cols, new_cols = _columns(old), _columns(new)
    if old_cols is None or new_cols is None:
        yield from _schema_changes(old, new, "the result", narrowing=False)
        return
    for name, schema in old_cols.items():
        if name not in new_cols:
            yield "breaking", "return_column_removed", f"returned column {name} was removed"
        else:
            for _, _, message in _schema_changes(schema, new_cols[name], f"returned column {name}", narrowing=False):
                yield "breaking", "return_type_changed", message
    for name in new_cols:
        if name not in old_cols:
            yield "non-breaking", "return_column_added", f"returned column {name} was added"


def _policy_changes(old: Mapping[str, list[Any]], new: Mapping[str, list[Any]]
                    ) -> Iterator[tuple[Severity, str, str]]:
    """A removed rule, a changed condition, or fields no longer filtered or masked may let more through."""
    for phase in ("input", "output"):
        was, now = old.get(phase, []), new.get(phase, [])
        remaining = list(now)
        for rule in was:
            if rule in remaining:
                remaining.remove(rule)
                continue
            twin = next((r for r in remaining if r["action"] == rule["action"]
                         and r["condition"] == rule["condition"]), None)
            if twin is not None:
                remaining.remove(twin)
                lost = sorted(set(rule.get("fields") or []) - set(twin.get("fields") or []))
                if lost:
                    yield "breaking", "policy_loosened", f"{phase} {rule['action']} rule no longer covers {lost}"
                elif twin.get("reason") != rule.get("reason"):
                    yield "non-breaking", "policy_reason_changed", f"{phase} rule's reason changed"
                else:
                    yield "non-breaking", "policy_tightened", f"{phase} {rule['action']} rule now covers more fields"
                continue
            yield "breaking", "policy_removed_or_changed", (
                f"{phase} {rule['action']} rule `{rule['condition']}` was removed or changed: review that it "
                "does not let more through")
        for rule in remaining:
            yield "non-breaking", "policy_added", f"{phase} {rule['action']} rule `{rule['condition']}` was added"


def _relation_changes(old: Mapping[str, Any], new: Mapping[str, Any], after: Mapping[Any, Any]) -> Iterator[Change]:
    readers: dict[str, list[Mapping[str, Any]]] = {}
    for e in after.values():
        for uid in e["relations"]:
            readers.setdefault(uid, []).append(e)
    new_relations = new.get("relations", {})
    for uid, was in old.get("relations", {}).items():
        users = readers.get(uid, [])
        if not users:
            continue  # no endpoint reads it any more: whatever happened to it, no contract depends on it
        who = ", ".join(sorted(_label(e) for e in users))
        first = users[0]
        yml = was.get("yml_path") or first.get("yml_path")
        now = new_relations.get(uid)
        if now is None:
            yield Change("breaking", "relation_removed", f"{uid}, read by {who}, is gone", _label(first), uid, yml)
            continue
        if was.get("from") != now.get("from"):
            continue  # declared columns against built ones: that is live drift's comparison
        for column, data_type in was["columns"].items():
            if column not in now["columns"]:
                yield Change("breaking", "relation_column_removed", f"{uid}.{column}, read by {who}, was removed",
                             _label(first), uid, yml)
            elif data_type and now["columns"][column] and not same_type(data_type, now["columns"][column]):
                yield Change("breaking", "relation_column_type_changed",
                             f"{uid}.{column}, read by {who}, changed type from {data_type} to "
                             f"{now['columns'][column]}", _label(first), uid, yml)
        for column in now["columns"]:
            if column not in was["columns"]:
                yield Change("non-breaking", "relation_column_added", f"{uid}.{column} was added", _label(first),
                             uid, yml)


# ---- live drift: the manifest against the warehouse ----------------------------------------------------


def live_drift(registry: Registry, manifest: Any, actual: Mapping[tuple[str, str, str], Mapping[str, str]]
               ) -> list[Change]:
    """Relations dbt declared but never built, and declared columns missing or typed otherwise in the warehouse.

    A difference in a relation an endpoint reads is breaking; elsewhere it is reported.
    """
    readers: dict[str, list[Endpoint]] = {}
    for e in registry.all():
        for uid in e.relations:
            readers.setdefault(uid, []).append(e)
    changes: list[Change] = []
    for node in manifest.hosts():
        if node.resource_type not in _RELATION_TYPES or node.materialized in _NO_RELATION:
            continue
        if node.resource_type == "source" and node.unique_id not in readers:
            continue  # sources dbt does not build; only those an endpoint reads must exist
        key = _relation_key(node)
        if key is None:
            continue
        users = readers.get(node.unique_id, [])
        severity: Severity = "breaking" if users else "non-breaking"
        where = f", read by {', '.join(sorted(e.label for e in users))}" if users else ""
        endpoint = users[0].label if users else None
        built = actual.get(key)
        if built is None:
            changes.append(Change(severity, "relation_not_built", f"{node.unique_id} ({'.'.join(key)}) is declared "
                                  f"but not in the warehouse{where}: run `dbt build`", endpoint, node.unique_id,
                                  node.yml_path))
            continue
        for name, column in node.columns.items():
            declared = column.get("data_type")
            found = built.get(name.lower())
            if found is None:
                changes.append(Change(severity, "column_not_built", f"{node.unique_id}.{name} is declared but "
                                      f"not in the warehouse{where}", endpoint, node.unique_id, node.yml_path))
            elif declared and not same_type(str(declared), found):
                changes.append(Change(severity, "column_type_mismatch", f"{node.unique_id}.{name} is declared "
                                      f"{declared} but is {found} in the warehouse{where}", endpoint,
                                      node.unique_id, node.yml_path))
    return sorted(changes, key=lambda c: (c.severity != "breaking", c.node or "", c.kind))


_ALIASES = {"int": "integer", "int4": "integer", "int8": "bigint", "long": "bigint", "string": "varchar",
            "text": "varchar", "char": "varchar", "bpchar": "varchar", "float8": "double", "float4": "float",
            "real": "float", "bool": "boolean", "numeric": "decimal", "timestamp without time zone": "timestamp",
            "timestamptz": "timestamp with time zone", "int2": "smallint", "short": "smallint",
            "int1": "tinyint"}


def same_type(declared: str, actual: str) -> bool:
    """Whether a dbt `data_type` names the DuckDB type found (DuckDB's aliases; varchar(n) as varchar)."""
    def norm(t: str) -> str:
        t = " ".join(t.lower().split())
        base, _, rest = t.partition("(")
        base = _ALIASES.get(base.strip(), base.strip())
        if base == "varchar":
            return base  # DuckDB ignores a varchar length
        return base + (f"({rest.replace(' ', '')}" if rest else "")

    a, b = norm(declared), norm(actual)
    return a == b or (a == "decimal" and b.startswith("decimal(")) or (b == "decimal" and a.startswith("decimal("))


def as_dict(change: Change) -> dict[str, Any]:
    """A change as JSON."""
    return asdict(change)
