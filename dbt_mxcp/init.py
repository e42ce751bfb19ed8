"""`dbt-mxcp init`: plan the files that adopt dbt-mxcp in an existing dbt project, never overwriting one.

The plan is computed from the project folder and its parsed manifest; `apply` writes it. Every step
either creates a file that does not exist (opened with mode "x", so a file that appeared meanwhile is
never replaced) or appends to packages.yml, or is skipped with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .manifest import Manifest, Node, column_sensitive
from .project import PROJECT_FILE, Project, read_yaml, render_jinja
from .settings import SETTINGS_FILE
from .types import type_from_data_type

EXAMPLE_FILE = "mxcp_example.yml"
PACKAGE_NAME = "dbt_mxcp"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SCALARS = ("string", "integer", "number", "boolean")


@dataclass(frozen=True)
class Step:
    """One file `init` creates, appends to, or leaves alone (and why)."""

    path: Path
    action: Literal["create", "append", "skip"]
    summary: str
    content: str = ""  # the whole file (create) or the text added at its end (append)


@dataclass(frozen=True)
class Example:
    """The example endpoint: its tool name, host model, and the argument that `run` needs."""

    tool: str
    model: Node
    key: str | None  # the point-lookup parameter; None for a list tool


def plan_init(project: Project, manifest: Manifest, package_root: Path | None) -> list[Step]:
    """The steps that adopt dbt-mxcp in `project`: mxcp.yml, an example endpoint, the package entry."""
    return [_settings_step(project), _example_step(project, manifest), _package_step(project, manifest, package_root)]


def apply(steps: list[Step]) -> None:
    """Write the planned creations and appends."""
    for step in steps:
        if step.action == "create":
            step.path.parent.mkdir(parents=True, exist_ok=True)
            with step.path.open("x", encoding="utf-8") as fh:  # "x": never replace a file
                fh.write(step.content)
        elif step.action == "append":
            with step.path.open("a", encoding="utf-8") as fh:
                fh.write(step.content)


def installed_package_root() -> Path | None:
    """The folder holding dbt-mxcp's dbt package (its dbt_project.yml), if this install has one.

    An editable install runs from the repository, whose root is the dbt package; a wheel ships the
    Python package only, so there is nothing local to point packages.yml at.
    """
    root = Path(__file__).resolve().parent.parent
    return root if _is_package_root(root) else None


# ---- mxcp.yml ----------------------------------------------------------------------------------


def _settings_step(project: Project) -> Step:
    path = project.project_dir / SETTINGS_FILE
    if path.exists():
        return Step(path, "skip", "already exists")
    name = json.dumps(project.name or "dbt-mxcp")  # a JSON string is a valid YAML scalar, quotes escaped
    content = f"""\
# dbt-mxcp server settings: every key is optional (see docs/settings.md in dbt-mxcp).
server:
  name: {name}
  # instructions: What these tools are for; MCP clients pass this to the model.
limits:                 # caps for every call; an endpoint's own caps can only be lower
  max_rows: 1000
  max_bytes: 10000000
  timeout: 30           # seconds
audit:                  # one record per call, before it is answered; read with `dbt-mxcp log`
  enabled: true
  sink: jsonl           # <log-path>/mxcp_audit.jsonl
# auth:                 # HTTP callers; `dbt-mxcp api-key` makes a key and its entry (docs/auth.md)
#   type: api_key
#   api_keys: []
# targets:              # per dbt target, merged over the settings above
#   prod:
#     limits: {{max_rows: 200}}
"""
    return Step(path, "create", f"server settings for {name}", content)


# ---- the example endpoint ----------------------------------------------------------------------


def _example_step(project: Project, manifest: Manifest) -> Step:
    path = project.project_dir / _model_path(project) / EXAMPLE_FILE
    if path.exists():
        return Step(path, "skip", "already exists")
    existing = next((h for h in manifest.hosts() if isinstance(h.mxcp, dict) and any(h.mxcp.values())), None)
    if existing is not None:
        return Step(path, "skip", f"the project already declares endpoints (on {existing.unique_id})")
    example = choose_example(manifest)
    if example is None:
        return Step(path, "skip", "no model in the manifest to put an example endpoint on")
    node = example.model
    tool: dict[str, Any] = {"name": example.tool}
    if example.key:
        tool["description"] = f"One row of {node.name} by {example.key}."
        key_type = _column_type(node, example.key)
        described = (node.columns.get(example.key) or {}).get("description") or f"The {example.key}."
        tool["parameters"] = [{"name": example.key, **(key_type or {}), "description": described}]
    else:
        tool["description"] = f"Rows of {node.name} (at most limits.max_rows of mxcp.yml)."
    tool["annotations"] = {"readOnlyHint": True}
    if node.data.get("patch_path"):
        # dbt refuses a second yml entry for a model: host the tool on an exposure instead.
        document = _on_exposure(manifest, node, example, tool)
        where = "on a new exposure"
    else:
        tool["return"] = {"type": "object"} if example.key else {"type": "array"}
        document = {"version": 2, "models": [{"name": node.name, "config": {"meta": {"mxcp": {"tools": [tool]}}}}]}
        where = "reading the model"
    header = (f"# An example dbt-mxcp endpoint, written by `dbt-mxcp init` (see docs/endpoints.md).\n"
              f"# Try it: dbt build && dbt-mxcp run tool {example.tool}"
              f"{f' --param {example.key}=<value>' if example.key else ''}\n")
    kind = "point-lookup" if example.key else "list"
    return Step(path, "create", f"{kind} tool {example.tool} on model {node.name}, {where}",
                header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120))


def choose_example(manifest: Manifest) -> Example | None:
    """The model for the example: one with a documented unique, not-null key; else documented columns; else any."""
    models = sorted((n for n in manifest.nodes() if n.resource_type == "model"
                     and n.package_name == manifest.project_name and n.relation_name),
                    key=lambda n: str(n.data.get("original_file_path") or n.unique_id))
    unique = _unique_columns(manifest)
    for node in models:
        for column in node.columns:
            if (_NAME.match(column) and (node.unique_id, column) in unique and manifest.column_not_null(node, column)
                    and (_column_type(node, column) or {}).get("type") in _SCALARS):
                return Example(_tool_name("get", node.name), node, column)
    chosen = next((n for n in models if n.columns), models[0] if models else None)
    return Example(_tool_name("list", chosen.name), chosen, None) if chosen else None


def _on_exposure(manifest: Manifest, node: Node, example: Example, tool: dict[str, Any]) -> dict[str, Any]:
    taken = {str(e.get("name")) for e in (manifest.data.get("exposures") or {}).values()}
    name = next(f"mxcp_server{i or ''}" for i in range(len(taken) + 1) if f"mxcp_server{i or ''}" not in taken)
    ref = "{{ ref(" + repr(node.name) + ") }}"
    sql = f"select *\nfrom {ref}\n"
    if example.key:
        sql += f"where {_quote(example.key)} = ${example.key}\n"
    # {% raw %}: dbt would render ref() while parsing yml, where it is undefined; dbt-mxcp renders it later.
    tool["source"] = {"code": "{% raw %}\n" + sql + "{% endraw %}\n"}
    row = {"type": "object", "properties": _row_properties(manifest, node)}
    if not row["properties"]:
        del row["properties"]
    tool["return"] = row if example.key else {"type": "array", "items": row}
    return {"version": 2, "exposures": [{
        "name": name,
        "type": "application",
        "description": "The MCP server dbt-mxcp serves from this project.",
        "owner": {"name": "dbt-mxcp init"},
        "depends_on": [f"ref({node.name!r})"],
        "config": {"meta": {"mxcp": {"tools": [tool]}}},
    }]}


def _row_properties(manifest: Manifest, node: Node) -> dict[str, Any]:
    # Only scalar columns with a known data_type: the rest are left unchecked, as derived types do.
    out: dict[str, Any] = {}
    for column, info in node.columns.items():
        typed = _column_type(node, column)
        if typed and typed["type"] in _SCALARS:
            if not manifest.column_not_null(node, column):
                typed["nullable"] = True
            if column_sensitive(info):
                typed["sensitive"] = True
            out[column] = typed
    return out


def _column_type(node: Node, column: str) -> dict[str, Any] | None:
    info = node.columns.get(column) or {}
    t = type_from_data_type(info.get("data_type"))
    if t is None:
        return None
    return {"type": t.type, **({"format": t.format} if t.format else {})}


def _unique_columns(manifest: Manifest) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for test in manifest.nodes():
        meta = test.data.get("test_metadata") or {}
        column = test.data.get("column_name") or (meta.get("kwargs") or {}).get("column_name")
        attached = test.data.get("attached_node")
        if test.resource_type == "test" and meta.get("name") == "unique" and column and attached:
            out.add((str(attached), str(column).strip('"')))
    for node in manifest.nodes():
        for column, info in node.columns.items():
            if any(c.get("type") in ("unique", "primary_key") for c in info.get("constraints") or []):
                out.add((node.unique_id, column))
    return out


def _tool_name(verb: str, model: str) -> str:
    return f"{verb}_" + re.sub(r"[^A-Za-z0-9_]", "_", model)


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _model_path(project: Project) -> str:
    raw = read_yaml(project.project_dir / PROJECT_FILE)
    paths = raw.get("model-paths") if isinstance(raw, dict) else None
    return str(paths[0]) if isinstance(paths, list) and paths else "models"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (SQL) as `|` blocks, for a file people read and edit."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


# ---- packages.yml ------------------------------------------------------------------------------


def _package_step(project: Project, manifest: Manifest, package_root: Path | None) -> Step:
    packages = project.project_dir / "packages.yml"
    dependencies = project.project_dir / "dependencies.yml"
    path = packages if packages.exists() or not dependencies.exists() else dependencies
    if _has_package(project, manifest, path):
        return Step(path, "skip", f"{PACKAGE_NAME} is already installed or listed")
    if package_root is None:
        return Step(path, "skip", "this dbt-mxcp install has no dbt package (a wheel ships Python only); the "
                                  "package is optional (audit macros and model): add a `local:` entry for a "
                                  "dbt-mxcp checkout to use it")
    # env_var: a teammate whose checkout lives elsewhere overrides the path without editing the file.
    entry = {"local": f"{{{{ env_var('DBT_MXCP_PACKAGE_PATH', '{package_root}') }}}}"}
    item = f"- local: \"{entry['local']}\"  # dbt-mxcp's dbt package (audit macros); optional for serving\n"
    if not path.exists():
        return Step(path, "create", f"{PACKAGE_NAME} from {package_root}", f"packages:\n  {item}")
    text = path.read_text(encoding="utf-8")
    addition = _append_item(text, item, entry)
    if addition is None:
        return Step(path, "skip", f"cannot append to its `packages:` list safely; add yourself: {item.strip()}")
    return Step(path, "append", f"{PACKAGE_NAME} from {package_root}", addition)


def _append_item(text: str, item: str, entry: Mapping[str, Any]) -> str | None:
    """Text that, appended, adds `entry` as the last package, or None when the file's layout does not allow it."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"packages.yml is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("packages") or [], list):
        return None
    before = list(data.get("packages") or [])
    first = re.search(r"^packages:[ \t]*(?:#.*)?\n((?:[ \t]*(?:#.*)?\n)*)( *)- ", text, re.M)
    lead = "" if not text or text.endswith("\n") else "\n"
    # Appending only joins the list if it ends the file in block style: check by parsing the result.
    for indent in dict.fromkeys([first.group(2) if first else "  ", "  "]):
        addition = f"{lead}{indent}{item}"
        try:
            after = yaml.safe_load(text + addition)
        except yaml.YAMLError:
            continue
        if isinstance(after, dict) and after.get("packages") == [*before, dict(entry)]:
            return addition
    return None


def _has_package(project: Project, manifest: Manifest, path: Path) -> bool:
    if any(str(m.get("package_name")) == PACKAGE_NAME for m in (manifest.data.get("macros") or {}).values()):
        return True  # `dbt deps` installed it, whatever the entry looks like
    if not path.exists():
        return False
    raw = read_yaml(path)
    entries = raw.get("packages") if isinstance(raw, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if any(isinstance(v, str) and re.search("dbt[_-]mxcp", v, re.I) for v in entry.values()):
            return True
        local = entry.get("local")
        if isinstance(local, str):
            try:
                rendered = render_jinja(local, project.variables)
            except ConfigError:
                continue  # an env var that is not set here: the entry cannot be ours to recognise
            if _is_package_root(project.project_dir / str(rendered)):
                return True
    return False


def _is_package_root(folder: Path) -> bool:
    path = folder / PROJECT_FILE
    if not path.is_file():
        return False
    try:
        raw = read_yaml(path)
    except ConfigError:
        return False
    return isinstance(raw, dict) and raw.get("name") == PACKAGE_NAME
