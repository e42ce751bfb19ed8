"""Loading a project for a command: dbt's artifacts → registry, and the warehouse it runs against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifact import read_artifact
from .errors import ConfigError, EndpointProblem
from .manifest import Manifest, load_manifest, paused_gc
from .project import Flags, Project, WarehouseConfig, load_project, load_warehouse_config
from .registry import Registry, build_registry
from .settings import Settings, load_settings


@dataclass(frozen=True)
class Loaded:
    """A project with its manifest, registry artifact, warehouse settings and registry."""

    project: Project
    manifest: Manifest
    artifact: dict[str, Any] | None
    warehouse: WarehouseConfig | None
    warehouse_error: ConfigError | None
    registry: Registry
    problems: list[EndpointProblem]
    settings: Settings

    def require_warehouse(self) -> WarehouseConfig:
        """The warehouse settings, or the error that kept them from loading."""
        if self.warehouse is None:
            raise self.warehouse_error or ConfigError("no warehouse configured")
        return self.warehouse


def read_registry(target_path: Path, project_dir: Path, *, variables: Mapping[str, Any] | None = None,
                  target: Mapping[str, Any] | None = None, compiled: Mapping[str, str] | None = None,
                  policy_sets: Mapping[str, Any] | None = None,
                  freeze: bool = False) -> tuple[Manifest, Registry, list[EndpointProblem]]:
    """manifest.json → registry, with the garbage collector paused from parse to build (see paused_gc)."""
    with paused_gc(freeze=freeze):
        manifest = load_manifest(target_path)
        registry, problems = build_registry(manifest, project_dir, variables=variables, target=target,
                                            compiled=compiled, policy_sets=policy_sets)
    return manifest, registry, problems


def load(flags: Flags, *, freeze: bool = True) -> Loaded:
    """Read dbt_project.yml, profiles.yml and the target path's artifacts, and build the registry.

    `freeze` suits a command's short-lived process (see `paused_gc`); a server passes False.
    """
    project = load_project(flags)
    artifact = read_artifact(project.target_path)
    recorded = (artifact or {}).get("warehouse")
    warehouse: WarehouseConfig | None = None
    warehouse_error: ConfigError | None = None
    try:
        warehouse = load_warehouse_config(project, recorded)
        target = warehouse.render_target()
        if recorded and recorded.get("profile") == warehouse.profile and recorded.get("target") \
                and recorded["target"] != warehouse.target:
            # The manifest names relations in the other target's database and schema.
            raise ConfigError(f"{project.target_path / 'manifest.json'} was written for target "
                              f"{recorded['target']!r}, not {warehouse.target!r}: run `dbt parse --target "
                              f"{warehouse.target}` first, or give each target its own --target-path")
    except ConfigError as exc:
        warehouse = None
        # `list` works without a profile; commands that query the warehouse report this error.
        warehouse_error = exc
        target = {k: recorded.get(k) for k in ("database", "schema", "path")} if recorded else {}
    settings = load_settings(project.project_dir, warehouse.target if warehouse else project.flags.target,
                             project.variables)
    manifest, registry, problems = read_registry(project.target_path, project.project_dir,
                                                 variables=project.variables, target=target,
                                                 compiled=(artifact or {}).get("compiled") or {},
                                                 policy_sets=settings.policy_sets, freeze=freeze)
    return Loaded(project, manifest, artifact, warehouse, warehouse_error, registry, problems, settings)
