"""Reading dbt's manifest.json: the nodes that host endpoints, their columns, and ref/source lookup."""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

MANIFEST_FILE = "manifest.json"
HOST_TYPES = ("model", "seed", "snapshot", "analysis")


@contextmanager
def paused_gc(*, freeze: bool = False) -> Iterator[None]:
    """Keep the cyclic garbage collector off a large manifest while it is parsed and walked.

    Parsing a big manifest makes millions of container objects, and every collection pass walks
    them all (about a third of the load time at 5,000 models). With `freeze`, what exists when the
    pause ends is frozen (`gc.freeze`) so that later passes skip it too; JSON data holds no
    reference cycles, so reference counting still frees it. Only short-lived processes should
    freeze: cyclic garbage frozen with it (compiled CEL programs) is never collected.
    """
    if not gc.isenabled():
        yield  # an outer pause owns the collector
        return
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        gc.enable()


class RefError(ValueError):
    """A ref() or source() names nothing in the manifest."""


@dataclass(frozen=True)
class Node:
    """One manifest node (model, seed, snapshot, analysis), source or exposure, as a thin view."""

    data: Mapping[str, Any]

    @property
    def unique_id(self) -> str:
        return str(self.data["unique_id"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def resource_type(self) -> str:
        return str(self.data["resource_type"])

    @property
    def package_name(self) -> str:
        return str(self.data.get("package_name", ""))

    @property
    def relation_name(self) -> str | None:
        value = self.data.get("relation_name")
        return str(value) if value else None

    @property
    def description(self) -> str | None:
        return self.data.get("description") or None

    @property
    def config(self) -> Mapping[str, Any]:
        return self.data.get("config") or {}

    @property
    def materialized(self) -> str | None:
        return self.config.get("materialized")

    @property
    def mxcp(self) -> Any:
        """The node's ``config.meta.mxcp`` block (``meta`` is the same dict in manifest v12)."""
        meta = self.config.get("meta") or self.data.get("meta") or {}
        return meta.get("mxcp")

    @property
    def yml_path(self) -> str:
        """The project-relative yml file that declares this node's properties (its SQL file if none)."""
        patch = self.data.get("patch_path")
        if patch:
            return str(patch).split("://", 1)[-1]
        return str(self.data.get("original_file_path") or self.data.get("path") or "")

    @property
    def columns(self) -> Mapping[str, Mapping[str, Any]]:
        return self.data.get("columns") or {}

    def relation(self) -> str:
        """The quoted relation name to query; an error for nodes dbt does not build."""
        if not self.relation_name:
            raise RefError(f"{self.unique_id} has no relation (ephemeral models and analyses cannot be read)")
        return self.relation_name


def column_mxcp(column: Mapping[str, Any]) -> Any:
    """A column's ``config.meta.mxcp`` block (None when absent)."""
    meta = (column.get("config") or {}).get("meta") or column.get("meta") or {}
    return meta.get("mxcp")


def column_sensitive(column: Mapping[str, Any]) -> bool:
    """Whether a column is marked ``config.meta.mxcp.sensitive: true``."""
    block = column_mxcp(column)
    return isinstance(block, dict) and block.get("sensitive") is True


class Manifest:
    """A loaded manifest.json with the lookups endpoint building needs."""

    def __init__(self, data: Mapping[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path
        self.metadata: Mapping[str, Any] = data.get("metadata") or {}
        self.project_name = str(self.metadata.get("project_name") or "")
        self._by_name: dict[str, list[Node]] = {}
        self._sources: dict[tuple[str, str], Node] = {}
        self._not_null: set[tuple[str, str]] = set()
        for node in self.nodes():
            if node.resource_type in ("model", "seed", "snapshot"):
                self._by_name.setdefault(node.name, []).append(node)
        for raw in (data.get("sources") or {}).values():
            self._sources[(raw["source_name"], raw["name"])] = Node(raw)
        for raw in (data.get("nodes") or {}).values():
            meta = raw.get("test_metadata") or {}
            if raw.get("resource_type") == "test" and meta.get("name") == "not_null":
                column = raw.get("column_name") or (meta.get("kwargs") or {}).get("column_name")
                attached = raw.get("attached_node")
                if column and attached:
                    self._not_null.add((attached, column.strip('"')))

    def nodes(self) -> Iterator[Node]:
        """Every node in `nodes` (models, seeds, snapshots, analyses, tests, ...)."""
        for raw in (self.data.get("nodes") or {}).values():
            yield Node(raw)

    def hosts(self) -> Iterator[Node]:
        """Every node that may declare endpoints: models, seeds, snapshots, analyses, sources, exposures."""
        for node in self.nodes():
            if node.resource_type in HOST_TYPES:
                yield node
        yield from self._sources.values()
        for raw in (self.data.get("exposures") or {}).values():
            yield Node(raw)

    def node(self, unique_id: str) -> Node | None:
        """A node, source or exposure by unique_id."""
        for section in ("nodes", "sources", "exposures"):
            raw = (self.data.get(section) or {}).get(unique_id)
            if raw is not None:
                return Node(raw)
        return None

    def resolve_ref(self, *args: str, version: Any = None) -> Node:
        """The node `ref(...)` names, preferring the root project's on a name clash, as dbt does."""
        if len(args) == 1:
            package, name = None, args[0]
        elif len(args) == 2:
            package, name = args
        else:
            raise RefError(f"ref() takes a name, or a package and a name; got {args!r}")
        candidates = [n for n in self._by_name.get(name, []) if package is None or n.package_name == package]
        if version is not None:
            candidates = [n for n in candidates if str(n.data.get("version")) == str(version)]
        elif len(candidates) > 1:
            latest = [n for n in candidates if n.data.get("version") in (None, n.data.get("latest_version"))]
            candidates = latest or candidates
        if not candidates:
            shown = f"'{package}', '{name}'" if package else f"'{name}'"
            raise RefError(f"ref({shown}) names no model, seed or snapshot in the manifest")
        root = [n for n in candidates if n.package_name == self.project_name]
        return (root or candidates)[0]

    def resolve_source(self, source_name: str, table_name: str) -> Node:
        """The source table `source(source_name, table_name)` names."""
        node = self._sources.get((source_name, table_name))
        if node is None:
            raise RefError(f"source('{source_name}', '{table_name}') names no source table in the manifest")
        return node

    def column_not_null(self, node: Node, column: str) -> bool:
        """Whether dbt knows `column` of `node` is never null (a constraint or a not_null test)."""
        if (node.unique_id, column) in self._not_null:
            return True
        col = node.columns.get(column) or {}
        for c in list(col.get("constraints") or []):
            if c.get("type") in ("not_null", "primary_key"):
                return True
        for c in list(node.data.get("constraints") or []):
            if c.get("type") == "primary_key" and column in (c.get("columns") or []):
                return True
        return False


def load_manifest(target_dir: Path, *, retries: int = 3) -> Manifest:
    """Load ``manifest.json`` from `target_dir`; a missing or half-written file is a clear error."""
    path = target_dir / MANIFEST_FILE
    if not path.is_file():
        raise ConfigError(f"no dbt manifest at {path}: run `dbt parse` (or `dbt build`) in the project first")
    for attempt in range(retries + 1):
        try:
            with path.open("rb") as fh, paused_gc():
                data = json.load(fh)
            break
        except json.JSONDecodeError as exc:
            # dbt writes manifest.json in place: it may be half-written right now.
            if attempt == retries:
                raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                  "if dbt is running, wait for it to finish, else run `dbt parse`") from None
            time.sleep(0.2)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict) or "nodes" not in data:
        raise ConfigError(f"{path} is not a dbt manifest: run `dbt parse` to write it again")
    version = str((data.get("metadata") or {}).get("dbt_schema_version", ""))
    m = re.search(r"/v(\d+)\.json$", version)
    if m and int(m.group(1)) < 10:
        raise ConfigError(f"{path} is a manifest {version.rsplit('/', 1)[-1]}; dbt-mxcp needs dbt >= 1.10 "
                          "(manifest v12): upgrade dbt and run `dbt parse`")
    return Manifest(data, path)
