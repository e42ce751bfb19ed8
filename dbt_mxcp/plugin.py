"""The dbt plugin: during every dbt command that writes manifest.json, check every ``mxcp`` block
and write ``target/mxcp_registry.json`` beside it. A bad block fails the dbt command.

This module is imported only inside dbt (through ``dbt_mxcp.plugins``); nothing else imports dbt.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbt.plugins.manager import dbt_hook, dbtPlugin

from .artifact import ARTIFACT_FILE, registry_document, write_json_atomic
from .manifest import MANIFEST_FILE, Manifest
from .project import Flags, load_project
from .registry import build_registry
from .settings import load_settings


class RegistryArtifact:
    """What dbt writes for us: it calls ``write(path)`` after manifest.json."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def write(self, path: str) -> None:
        """Write the artifact atomically (dbt's own artifacts are written in place)."""
        write_json_atomic(Path(path), self.document)


class MxcpError(Exception):
    """Raised to fail the dbt command; dbt prints the message."""


class MxcpPlugin(dbtPlugin):
    """dbt-mxcp's dbt plugin."""

    @dbt_hook  # type: ignore[untyped-decorator]
    def get_manifest_artifacts(self, manifest: Any) -> dict[str, Any]:
        """Check the project's endpoints and return the registry artifact to write."""
        config = _runtime_config(self.project_name)
        if config is None:
            return {}
        project_dir = Path(config.project_root)
        target_path = Path(config.project_target_path)
        data = _manifest_dict(manifest, target_path)
        parsed = Manifest(data)
        compiled = _compile_analyses(manifest, parsed, config)
        warehouse = _warehouse(config)
        project = load_project(Flags(project_dir=str(project_dir), vars=json.dumps(config.cli_vars or {})))
        settings = load_settings(project_dir, config.target_name, project.variables)
        registry, problems = build_registry(parsed, project_dir, variables=project.variables,
                                           target=_render_target(config, warehouse), compiled=compiled,
                                           policy_sets=settings.policy_sets)
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            lines = "\n".join(f"  - {p}" for p in problems)
            raise MxcpError(f"dbt-mxcp found {len(problems)} {noun} in mxcp endpoint declarations:\n{lines}")
        metadata = {
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "invocation_id": parsed.metadata.get("invocation_id"),
            "dbt_version": parsed.metadata.get("dbt_version"),
            "project_name": parsed.project_name,
        }
        document = registry_document(registry, warehouse=warehouse, compiled=compiled, metadata=metadata)
        return {str(target_path / ARTIFACT_FILE): RegistryArtifact(document)}


def _runtime_config(project_name: str) -> Any:
    from dbt.adapters.factory import FACTORY

    adapters = list(FACTORY.adapters.values())
    for adapter in adapters:
        config = getattr(adapter, "config", None)
        if config is not None and getattr(config, "project_name", None) == project_name:
            return config
    return getattr(adapters[0], "config", None) if adapters else None


def _manifest_dict(manifest: Any, target_path: Path) -> dict[str, Any]:
    # dbt has just written manifest.json: reading it back is cheaper than serialising the manifest
    # again, and gives the registry exactly what dbt-mxcp reads later.
    path = target_path / MANIFEST_FILE
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
        if data.get("metadata", {}).get("invocation_id") == manifest.metadata.invocation_id:
            return dict(data)
    except (OSError, ValueError):
        pass
    return dict(manifest.writable_manifest().to_dict(omit_none=False))


def _warehouse(config: Any) -> dict[str, Any]:
    creds = config.credentials
    configured = str(getattr(creds, "path", "") or ":memory:")
    path = configured
    if configured != ":memory:" and not configured.startswith(("md:", "motherduck:")):
        path = os.path.abspath(configured)  # dbt-duckdb opens a relative path against dbt's cwd
    return {
        "type": getattr(creds, "type", None),
        "profile": config.profile_name,
        "target": config.target_name,
        "configured_path": configured,
        "path": path,
        "database": getattr(creds, "database", None),
        "schema": getattr(creds, "schema", None),
    }


def _render_target(config: Any, warehouse: dict[str, Any]) -> dict[str, Any]:
    return {"name": config.target_name, "profile_name": config.profile_name, "type": warehouse["type"],
            "database": warehouse["database"], "schema": warehouse["schema"], "path": warehouse["path"]}


def _compile_analyses(manifest: Any, parsed: Manifest, config: Any) -> dict[str, str]:
    """Compile the analyses that host endpoints (`dbt build` leaves their compiled_code empty)."""
    wanted = [n.unique_id for n in parsed.nodes()
              if n.resource_type == "analysis" and isinstance(n.mxcp, dict)
              and any(isinstance(e, dict) and not e.get("source") for e in
                      [*(n.mxcp.get("tools") or []), *(n.mxcp.get("resources") or [])])]
    if not wanted:
        return {}
    from dbt.adapters.factory import get_adapter
    from dbt.compilation import Compiler

    compiler = Compiler(config)
    adapter = get_adapter(config)
    out = {}
    with adapter.connection_named("dbt_mxcp_compile"):
        for uid in wanted:
            node = manifest.nodes[uid]
            try:
                compiled = compiler.compile_node(node, manifest, {}, write=False)
            except Exception as exc:
                raise MxcpError(f"{node.original_file_path}: cannot compile analysis {node.name} for its mxcp "
                                f"endpoint: {' '.join(str(exc).split())}") from None
            out[uid] = compiled.compiled_code or ""
    return out
