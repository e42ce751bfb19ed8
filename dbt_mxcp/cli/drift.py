"""`dbt-mxcp drift snapshot` and `dbt-mxcp drift check`: the endpoint contract guarded in CI."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, MxcpError, RegistryError
from ..project import Flags
from . import dbt_flags, handle_errors, lock_wait_option
from .output import emit_json, github_annotation, line


@click.group("drift")
def drift_group() -> None:
    """Snapshot the endpoint contract, and check changes against it (for CI)."""


def _loaded(flags: Flags) -> Any:
    from ..load import load

    loaded = load(flags)
    if loaded.problems:
        raise RegistryError(loaded.problems)
    return loaded


def _actual(loaded: Any, lock_wait: float) -> Any:
    """The warehouse's relations and columns (read-only)."""
    from ..warehouse import open_warehouse

    warehouse = open_warehouse(loaded.require_warehouse(), lock_wait=lock_wait)
    try:
        return warehouse.columns()
    finally:
        warehouse.close()


@drift_group.command("snapshot")
@dbt_flags
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where to write the baseline (default: target/mxcp_drift.json).")
@click.option("--no-warehouse", is_flag=True, help="Take relation columns from the manifest only.")
@lock_wait_option
@handle_errors
def snapshot_command(flags: Flags, output_file: Path | None, no_warehouse: bool, lock_wait: float) -> None:
    """Write a baseline of every endpoint's contract and of the relations they read."""
    from ..drift import DEFAULT_FILE, snapshot, write_snapshot

    loaded = _loaded(flags)
    actual = None if no_warehouse else _actual(loaded, lock_wait)
    data = snapshot(loaded.registry, loaded.manifest, actual=actual, project=loaded.project.name)
    path = output_file or loaded.project.target_path / DEFAULT_FILE
    write_snapshot(data, path)
    line(f"Wrote the drift baseline of {len(data['endpoints'])} endpoint(s) and {len(data['relations'])} "
         f"relation(s) to {path}", "ok")


def baseline_from_state(state: Path, loaded: Any) -> dict[str, Any]:
    """The baseline in another run's artifacts: its mxcp_drift.json, else one built from its manifest."""
    from ..drift import DEFAULT_FILE, read_snapshot, snapshot
    from ..load import read_registry

    if (state / DEFAULT_FILE).is_file():
        return read_snapshot(state / DEFAULT_FILE)
    if not (state / "manifest.json").is_file():
        raise ConfigError(f"--state {state} holds no manifest.json (nor {DEFAULT_FILE}): point it at the "
                          "target folder of the run to compare with")
    from ..artifact import read_artifact

    artifact = read_artifact(state) or {}
    manifest, registry, problems = read_registry(state, loaded.project.project_dir,
                                                 variables=loaded.project.variables,
                                                 compiled=artifact.get("compiled") or {},
                                                 policy_sets=loaded.settings.policy_sets)
    if problems:
        raise ConfigError(f"the endpoints in {state} have problems of their own: {problems[0]}")
    return snapshot(registry, manifest, project=loaded.project.name)


@drift_group.command("check")
@dbt_flags
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A baseline written by `drift snapshot`.")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path), envvar="DBT_STATE", metavar="DIR",
              help="Another run's artifacts (its target folder), as dbt's --state.")
@click.option("--warehouse", "live", is_flag=True,
              help="Also compare the manifest's declared relations and columns with the warehouse.")
@click.option("--output", "-o", type=click.Choice(["text", "json", "markdown", "github"]), default="text",
              show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 on any drift, not only breaking drift.")
@lock_wait_option
@handle_errors
def check_command(flags: Flags, baseline: Path | None, state: Path | None, live: bool, output: str, strict: bool,
                  lock_wait: float) -> None:
    """Compare the endpoint contract with a baseline (and the warehouse): exit 1 on breaking drift."""
    from ..drift import compare, live_drift, read_snapshot, snapshot

    if baseline is None and state is None and not live:
        raise click.UsageError("give --baseline FILE, --state DIR or --warehouse (or several)")
    if baseline is not None and state is not None:
        raise click.UsageError("give --baseline or --state, not both")
    loaded = _loaded(flags)
    changes = []
    compared_with = []
    actual = _actual(loaded, lock_wait) if live else None
    if baseline is not None or state is not None:
        old = read_snapshot(baseline) if baseline is not None else baseline_from_state(state, loaded)  # type: ignore[arg-type]
        # Built columns are compared with built columns, declared with declared.
        from_warehouse = any(r.get("from") == "warehouse" for r in old.get("relations", {}).values())
        if from_warehouse and actual is None:
            try:
                actual = _actual(loaded, lock_wait)
            except MxcpError as exc:
                line(f"Warning: relation columns not compared: the baseline has the warehouse's, and {exc}",
                     "warning", err=True)
        new = snapshot(loaded.registry, loaded.manifest, actual=actual if from_warehouse else None)
        changes += compare(old, new)
        compared_with.append(str(baseline or state))
    if live:
        assert actual is not None
        changes += live_drift(loaded.registry, loaded.manifest, actual)
        compared_with.append("the warehouse")
    _report(changes, output, " and ".join(compared_with), loaded.project.project_dir)
    breaking = any(c.severity == "breaking" for c in changes)
    sys.exit(1 if breaking or (strict and changes) else 0)


def _report(changes: Sequence[Any], output: str, against: str, project_dir: Path) -> None:
    from ..drift import as_dict

    breaking = [c for c in changes if c.severity == "breaking"]
    other = [c for c in changes if c.severity != "breaking"]
    if output == "json":
        emit_json({"against": against, "changes": [as_dict(c) for c in changes],
                   "summary": {"breaking": len(breaking), "non_breaking": len(other)}})
    elif output == "github":
        for c in changes:
            breaking_change = c.severity == "breaking"
            click.echo(github_annotation("error" if breaking_change else "warning", c.message,
                                         project_dir=project_dir, file=c.yml_path,
                                         title=f"{'Breaking' if breaking_change else 'Non-breaking'} drift: {c.kind}"))
    elif output == "markdown":
        click.echo(_markdown(breaking, other, against))
    else:
        for c in changes:
            where = f" ({c.node}, {c.yml_path})" if c.node else ""
            line(f"{'BREAKING' if c.severity == 'breaking' else 'changed '} {c.message}{where}",
                 "error" if c.severity == "breaking" else "warning")
        status = "error" if breaking else "ok"
        line(f"Drift against {against}: {len(breaking)} breaking, {len(other)} non-breaking change(s)", status)


def _markdown(breaking: Sequence[Any], other: Sequence[Any], against: str) -> str:
    lines = [f"### dbt-mxcp drift against {against}", ""]
    if not breaking and not other:
        return "\n".join([*lines, "No drift: every endpoint contract is unchanged."])
    lines.append(f"**{len(breaking)} breaking**, {len(other)} non-breaking change(s).")
    for title, group in (("Breaking", breaking), ("Non-breaking", other)):
        if not group:
            continue
        lines += ["", f"#### {title}", "", "| Endpoint | Change | Node | File |", "|---|---|---|---|"]
        for c in group:
            cell = c.message.replace("|", "\\|")
            lines.append(f"| {c.endpoint or '-'} | {cell} | `{c.node or '-'}` | {c.yml_path or '-'} |")
    return "\n".join(lines)
