"""``target/mxcp_registry.json``: the registry artifact the dbt plugin writes beside manifest.json.

It records what only dbt knows — the warehouse path as dbt resolved it, analyses compiled with the
project's macros — plus a summary of every endpoint for people and CI tools.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .registry import Registry

ARTIFACT_FILE = "mxcp_registry.json"
SCHEMA_VERSION = "https://dbt-mxcp.dev/schemas/mxcp_registry/v1.json"


def registry_document(registry: Registry, *, warehouse: Mapping[str, Any], compiled: Mapping[str, str],
                      metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact's JSON document."""
    endpoints = []
    for e in registry.all(include_disabled=True):
        endpoints.append({
            "kind": e.kind,
            "name": e.name,
            "enabled": e.enabled,
            "node": e.node_id,
            "resource_type": e.node_type,
            "yml_path": e.yml_path,
            "source_kind": e.source_kind,
            "source_file": e.source_file,
            "description": e.description,
            "input_schema": e.input_schema(),
            "return_schema": e.return_schema(),
            "relations": list(e.relations),
            "sql": e.sql,
        })
    return {
        "metadata": {"dbt_schema_version": SCHEMA_VERSION, "mxcp_version": __version__, **metadata},
        "warehouse": dict(warehouse),
        "compiled": dict(compiled),
        "endpoints": endpoints,
    }


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2, sort_keys=False, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_artifact(target_path: Path) -> dict[str, Any] | None:
    """The artifact in `target_path`, or None when missing or unreadable (it is an optimisation)."""
    path = target_path / ARTIFACT_FILE
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
