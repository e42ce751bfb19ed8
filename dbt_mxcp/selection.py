"""Choosing endpoints with dbt's own node selection: --select, --exclude, --selector and --state.

dbt parses the selection (its SelectionSpec) and its NodeSelector runs it on the graph of
target/manifest.json, loaded as it is: nothing is parsed again, so the manifest must be current.
An endpoint is selected with its host node, or by its own `tags` through a plain `tag:` criterion.
dbt is imported here only, and lazily: serving never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .load import Loaded
from .manifest import MANIFEST_FILE
from .project import Project, find_profiles_dir, parse_vars
from .registry import Endpoint

if TYPE_CHECKING:
    from dbt.contracts.graph.manifest import Manifest as DbtManifest
    from dbt.graph.selector_spec import SelectionSpec

SELECTORS_FILE = "selectors.yml"
# Methods that compare with another run's artifacts (dbt reads them from --state).
STATE_METHODS = ("state", "result", "source_status")
# Endpoints join dbt's node sets under ids that no dbt unique_id looks like (those have no colon).
_ENDPOINT_ID = "mxcp-endpoint:{}"


def select_endpoints(loaded: Loaded, select: Sequence[str] = (), exclude: Sequence[str] = (),
                     selector: str | None = None, state: Path | None = None) -> list[Endpoint]:
    """The enabled endpoints the dbt selection picks (all of them when nothing is selected), in registry order."""
    endpoints = list(loaded.registry.all())
    project = loaded.project
    state_dir = _state_dir(state) if state is not None else None
    if not (select or exclude or selector) and not (project.project_dir / SELECTORS_FILE).is_file():
        return endpoints  # nothing to select by, not even a default selector: spare importing dbt (~1 s)
    from dbt_common.events.contextvars import task_contextvars

    _init_dbt(project)
    spec = _selection_spec(loaded, select, exclude, selector)
    if spec is None:
        return endpoints
    if state_dir is None:
        needs_state = [c.raw for c in _criteria(spec) if str(c.method) in STATE_METHODS]
        if needs_state:
            raise ConfigError(f"selecting by {', '.join(map(str, needs_state))} compares with another run: pass "
                              "--state PATH, the target folder (with manifest.json) of that run")
    _require_current_manifest(loaded)
    manifest = _dbt_manifest(loaded)
    # `path:` selectors are globs relative to the project root, which dbt reads from this context.
    with task_contextvars(project_root=str(project.project_dir)), _dbt_errors("cannot run the selection"):
        selected = _select(manifest, _previous_state(project, state_dir), spec, endpoints)
    return [e for i, e in enumerate(endpoints) if _ENDPOINT_ID.format(i) in selected]


def _state_dir(state: Path) -> Path:
    path = state.expanduser().resolve()  # as dbt's --state: relative to the working directory
    if not (path / MANIFEST_FILE).is_file():
        raise ConfigError(f"--state {state}: no {MANIFEST_FILE} in {path}; pass the target folder of the run to "
                          "compare with (a copy of its target/ after `dbt parse`, `dbt build` ...)")
    return path


@contextmanager
def _dbt_errors(what: str) -> Iterator[None]:
    """Turn dbt's exceptions into a ConfigError saying `what` failed, without a traceback."""
    from dbt_common.exceptions import DbtBaseException

    try:
        yield
    except DbtBaseException as exc:
        message = " ".join(str(getattr(exc, "msg", None) or exc).split())
        raise ConfigError(f"{what}: {message}") from None


def _init_dbt(project: Project) -> None:
    # What dbt's CLI sets up before a command: its console log, the environment env_var() reads,
    # and the global flags selection reads (indirect selection, state comparison, warn-error)
    # from the environment and dbt_project.yml `flags:`.
    import os
    import sys
    from argparse import Namespace

    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context
    from dbt_common.events.base_types import EventLevel
    from dbt_common.events.event_manager_client import add_logger_to_manager, cleanup_event_logger
    from dbt_common.events.functions import get_stdout_config
    from dbt_common.events.logger import LineFormat

    # dbt's warnings (a criterion that matches nothing, ...) go to stderr: stdout is the command's.
    cleanup_event_logger()
    console = get_stdout_config(LineFormat.PlainText, sys.stderr.isatty(), EventLevel.WARN, False)
    console.output_stream = sys.stderr
    add_logger_to_manager(console)
    set_invocation_context(os.environ)
    args = Namespace(project_dir=str(project.project_dir), profiles_dir=str(find_profiles_dir(project.flags)))
    with _dbt_errors(f"cannot read the dbt project in {project.project_dir}"):
        set_from_args(args, None)


def _selection_spec(loaded: Loaded, select: Sequence[str], exclude: Sequence[str],
                    selector: str | None) -> SelectionSpec | None:
    """dbt's spec for the arguments, as `dbt ls` chooses it; None when there is nothing to select by.

    Like dbt, a --selector wins over --select/--exclude, and without any of them the selector
    marked `default: true` in selectors.yml applies.
    """
    from dbt.graph.cli import parse_difference

    if selector is None and (select or exclude):
        given = " ".join([*(f"--select {s}" for s in select), *(f"--exclude {s}" for s in exclude)])
        with _dbt_errors(f"invalid selection {given}"):
            return parse_difference(list(select) or None, list(exclude) or None)
    path = loaded.project.project_dir / SELECTORS_FILE
    selectors = _project_selectors(loaded, path)
    name = selector or next((n for n, s in selectors.items() if s["default"] is True), None)
    if name is None:
        return None
    if name not in selectors:
        known = ", ".join(sorted(selectors)) or "none"
        raise ConfigError(f"--selector {name}: no selector of that name in {path} (selectors: {known})")
    spec: SelectionSpec = selectors[name]["definition"]
    return spec


def _project_selectors(loaded: Loaded, path: Path) -> Mapping[str, Mapping[str, Any]]:
    """selectors.yml as dbt reads it at every invocation, rendered with --vars, env_var() and target."""
    if not path.is_file():
        return {}
    from dbt.config.renderer import BaseRenderer
    from dbt.config.selectors import SelectorConfig
    from dbt.context.base import BaseContext
    from dbt.context.target import TargetContext

    cli_vars = parse_vars(loaded.project.flags.vars)
    warehouse = loaded.warehouse
    context = TargetContext(warehouse.render_target(), cli_vars) if warehouse else BaseContext(cli_vars)
    with _dbt_errors(str(path)):
        return SelectorConfig.from_path(path, BaseRenderer(context.to_dict()))


def _criteria(spec: SelectionSpec) -> Iterator[Any]:
    """The single criteria (dbt's SelectionCriteria) in a spec, at any depth."""
    from dbt.graph.selector_spec import SelectionCriteria

    if isinstance(spec, SelectionCriteria):
        yield spec
    else:
        for part in spec:
            yield from _criteria(part)


def _require_current_manifest(loaded: Loaded) -> None:
    from .validate import stale_artifacts

    manifest = str(loaded.project.target_path / MANIFEST_FILE)
    for finding in stale_artifacts(loaded):
        if finding.where == manifest:
            raise ConfigError(f"cannot select with dbt: {manifest} is {finding.message}")


def _dbt_manifest(loaded: Loaded) -> DbtManifest:
    """target/manifest.json as dbt's Manifest; the very one the registry was built from."""
    from dbt.artifacts.schemas.manifest import WritableManifest
    from dbt.contracts.graph.manifest import Manifest

    path = loaded.project.target_path / MANIFEST_FILE
    with _dbt_errors(f"cannot read {path} (run `dbt parse`)"):
        manifest = Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(str(path)))
    if manifest.metadata.invocation_id != loaded.manifest.metadata.get("invocation_id"):
        raise ConfigError(f"{path} changed while dbt-mxcp read it (is dbt running?): run the command again")
    return manifest


def _previous_state(project: Project, state_dir: Path | None) -> Any:
    if state_dir is None:
        return None
    from dbt.contracts.state import PreviousState

    with _dbt_errors(f"cannot read --state {state_dir}"):
        return PreviousState(state_path=state_dir, target_path=project.target_path,
                             project_root=project.project_dir)


def _select(manifest: DbtManifest, previous_state: Any, spec: SelectionSpec, endpoints: list[Endpoint]) -> set[str]:
    """dbt's NodeSelector run over the manifest's graph, each criterion also taking endpoints.

    Every criterion's node set gains the endpoints its nodes host, and a `tag:` criterion without
    graph operators also the endpoints tagged so themselves; dbt then combines the sets (unions,
    intersections, exclusions, selectors.yml definitions) as it does for nodes.
    """
    from dbt.compilation import Linker
    from dbt.graph.graph import Graph
    from dbt.graph.selector import NodeSelector
    from dbt.graph.selector_spec import SelectionCriteria

    hosted: dict[str, list[str]] = {}
    for i, e in enumerate(endpoints):
        hosted.setdefault(e.node_id, []).append(_ENDPOINT_ID.format(i))

    def tagged(pattern: str) -> set[str]:
        # dbt's tag method: any tag matching the value as a glob.
        return {_ENDPOINT_ID.format(i) for i, e in enumerate(endpoints)
                if any(fnmatch(tag, pattern) for tag in getattr(e.spec, "tags", None) or ())}

    class EndpointSelector(NodeSelector):
        def get_nodes_from_criteria(self, spec: SelectionCriteria) -> tuple[set[Any], set[Any]]:
            direct, indirect = super().get_nodes_from_criteria(spec)
            ids = {uid for node_id in direct for uid in hosted.get(node_id, ())}
            if str(spec.method) == "tag" and not (spec.parents or spec.children or spec.childrens_parents):
                ids |= tagged(str(spec.value))
            return direct | ids, indirect

    linker = Linker()
    linker.link_graph(manifest)
    selector = EndpointSelector(Graph(linker.graph), manifest, previous_state=previous_state)
    direct, _ = selector.select_nodes(spec)
    return {str(uid) for uid in direct}
