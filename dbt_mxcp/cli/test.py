"""`dbt-mxcp test`: run endpoint tests chosen with dbt's selectors, report them as dbt reports tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import RegistryError
from ..project import Flags
from . import dbt_flags, handle_errors, lock_wait_option
from .output import line
from .report import CaseResult, Reporter, run_options


def selection_options(func: Any) -> Any:
    """dbt's node selection flags."""
    options = [
        click.option("--select", "-s", "select", multiple=True, metavar="SELECTOR",
                     help="dbt selector: endpoints on the selected nodes (or with a selected tag) are used."),
        click.option("--exclude", multiple=True, metavar="SELECTOR", help="dbt selector of what to leave out."),
        click.option("--selector", "selector", metavar="NAME", help="A selector from the project's selectors.yml."),
        click.option("--state", type=click.Path(file_okay=False, path_type=Path), envvar="DBT_STATE",
                     help="Artifacts of another run, for state:modified and friends."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("test")
@dbt_flags
@selection_options
@run_options("test")
@lock_wait_option
@handle_errors
def test_command(flags: Flags, select: tuple[str, ...], exclude: tuple[str, ...], selector: str | None,
                 state: Path | None, output: str, junit_xml: Path | None, fail_fast: bool, threads: int,
                 lock_wait: float) -> None:
    """Run the endpoints' tests through the served pipeline, against the warehouse, read-only."""
    from ..load import load
    from ..pipeline import open_pipeline
    from ..selection import select_endpoints
    from ..testing import cases_of, run_case

    loaded = load(flags)
    if loaded.problems:
        raise RegistryError(loaded.problems)
    endpoints = select_endpoints(loaded, select, exclude, selector, state)  # a default selector applies
    cases = cases_of(endpoints)
    if not cases:
        line(f"Nothing to test: {len(endpoints)} endpoint(s) selected, none with tests.", "warning")
        return
    reporter = Reporter(len(cases), "json" if output == "json" else "text")
    needs_warehouse = any(c.endpoint.kind != "prompt" for c in cases)
    # Tests never change data: write endpoints get no write database, and nothing is audited.
    with open_pipeline(loaded, lock_wait=lock_wait, warehouse=needs_warehouse, writes=False,
                       audit=False) as pipeline:
        reporter.run_all(cases, lambda case: run_case(pipeline, case), lambda case: CaseResult(
            case.suite, case.test.name, "skip", 0.0, "skipped: an earlier test failed (--fail-fast)",
            case.endpoint.node_id, case.endpoint.yml_path), threads=threads, fail_fast=fail_fast)
    sys.exit(reporter.finish(junit_xml, "dbt-mxcp test"))
