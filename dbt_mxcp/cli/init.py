"""`dbt-mxcp init`: adopt dbt-mxcp in an existing, parsed dbt project without overwriting anything."""

from __future__ import annotations

import click

from ..project import Flags
from . import dbt_flags, handle_errors
from .output import line


@click.command("init")
@dbt_flags
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@handle_errors
def init_command(flags: Flags, dry_run: bool) -> None:
    """Add mxcp.yml, an example endpoint and the dbt_mxcp package to a dbt project (needs `dbt parse` first)."""
    from ..init import apply, installed_package_root, plan_init
    from ..manifest import load_manifest
    from ..project import load_project
    from .clients import client_config

    project = load_project(flags)
    steps = plan_init(project, load_manifest(project.target_path), installed_package_root())
    verbs = {"create": "Would create" if dry_run else "Created",
             "append": "Would append to" if dry_run else "Appended to", "skip": "Skipped"}
    if not dry_run:
        apply(steps)
    for step in steps:
        shown = step.path.relative_to(project.project_dir)
        line(f"{verbs[step.action]} {shown}: {step.summary}", "info" if step.action == "skip" else "ok")
        if dry_run and step.action != "skip":
            click.echo(step.content)
    changed = [s for s in steps if s.action != "skip"]
    if not changed:
        line("Nothing to change: the project already has what init adds", "ok")
    click.echo("\nClaude Desktop (claude_desktop_config.json):")
    click.echo(client_config(flags, "claude", host="127.0.0.1", port=8000))
    click.echo("\nNext steps:")
    if any(s.action != "skip" and s.path.name in ("packages.yml", "dependencies.yml") for s in steps):
        click.echo("  dbt deps               # installs the dbt_mxcp package")
    click.echo("  dbt build              # parses the endpoints and builds the warehouse\n"
               "  dbt-mxcp validate      # checks every endpoint against it\n"
               "  dbt-mxcp serve         # MCP over stdio (the config above starts it)")
