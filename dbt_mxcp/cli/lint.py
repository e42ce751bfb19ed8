"""`dbt-mxcp lint`: the rules of dbt_mxcp/lint.py over the project, as text, JSON or GitHub annotations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..project import Flags
from . import dbt_flags, handle_errors
from .output import emit_json, github_annotation, line

if TYPE_CHECKING:
    from ..lint import Finding, Severity

# dbt_mxcp.lint.SEVERITIES, written out: importing the rules here would slow the start of every command.
LEVELS = ("error", "warning", "info")
_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


@click.command("lint")
@dbt_flags
@click.option("--severity", type=click.Choice(LEVELS), default="info", show_default=True,
              help="Show findings of this severity and above.")
@click.option("--output", "-o", type=click.Choice(["text", "json", "github"]), default="text", show_default=True,
              help="text lines, one JSON document, or GitHub Actions workflow annotations.")
@handle_errors
def lint_command(flags: Flags, severity: Severity, output: str) -> None:
    """Check endpoints for what leaves a language model guessing or data unprotected; exit 1 on errors.

    Reads dbt's artifacts only (run `dbt parse` first); never opens the warehouse. docs/lint.md lists
    the rules.
    """
    from ..lint import SEVERITIES, at_least, lint
    from ..load import load

    loaded = load(flags)
    findings = lint(loaded)
    shown = [f for f in findings if at_least(f.severity, severity)]
    counts = {s: sum(f.severity == s for f in shown) for s in SEVERITIES}
    endpoints = sum(1 for _ in loaded.registry.all())
    if output == "json":
        emit_json({"findings": [f.to_dict() for f in shown], "summary": {**counts, "endpoints": endpoints}})
    elif output == "github":
        for f in shown:
            click.echo(_annotation(f, loaded.project.project_dir))
    else:
        _print_text(shown, counts, len(findings) - len(shown), severity, endpoints)
    if any(f.severity == "error" for f in findings):
        sys.exit(1)


def _print_text(shown: list[Finding], counts: dict[Severity, int], hidden: int, severity: Severity,
                endpoints: int) -> None:
    """A line per finding and its fix, then a summary; `counts` is by severity, most severe first."""
    for f in shown:
        line(f"{f.severity.capitalize()}: {f.where}: {f.message} [{f.rule}]", f.severity)
        line(f"  Fix: {f.hint}")
    if not shown:
        line(f"Linted {endpoints} endpoint(s): no findings" + (f" at --severity {severity}" if hidden else ""), "ok")
    else:
        found = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts.items() if n)
        line(f"Lint found {found} in {endpoints} endpoint(s)", next(s for s, n in counts.items() if n))
    if hidden:
        line(f"{hidden} finding(s) below --severity {severity} not shown")


def _annotation(f: Finding, project_dir: Path) -> str:
    message = f"{f.about}: {f.message}" if f.about else f.message
    return github_annotation(_GITHUB_LEVEL[f.severity], f"{message}\nFix: {f.hint}", project_dir=project_dir,
                             file=f.location.file, line_number=f.location.line, title=f"dbt-mxcp {f.rule}")
