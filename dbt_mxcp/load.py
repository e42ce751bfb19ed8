"""Loading a project for a command: dbt's artifacts → registry, and the warehouse it runs against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .artifact import read_artifact
from .errors import ConfigError, EndpointProblem
from .manifest import Manifest, load_manifest
from .project import Flags, Project, WarehouseConfig, load_project, load_warehouse_config
from .registry import Registry, build_registry


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

    def require_warehouse(self) -> WarehouseConfig:
        """The warehouse settings, or the error that kept them from loading."""
        if self.warehouse is None:
            raise self.warehouse_error or ConfigError("no warehouse configured")
        return self.warehouse


def load(flags: Flags) -> Loaded:
    """Read dbt_project.yml, profiles.yml and the target path's artifacts, and build the registry."""
    project = load_project(flags)
    manifest = load_manifest(project.target_path)
    artifact = read_artifact(project.target_path)
    recorded = (artifact or {}).get("warehouse")
    warehouse: WarehouseConfig | None = None
    warehouse_error: ConfigError | None = None
    try:
        warehouse = load_warehouse_config(project, recorded)
        target = warehouse.render_target()
    except ConfigError as exc:
        # `list` works without a profile; commands that query the warehouse report this error.
        warehouse_error = exc
        target = {k: recorded.get(k) for k in ("database", "schema", "path")} if recorded else {}
    registry, problems = build_registry(manifest, project.project_dir, variables=project.variables, target=target,
                                        compiled=(artifact or {}).get("compiled") or {})
    return Loaded(project, manifest, artifact, warehouse, warehouse_error, registry, problems)
