"""`dbt-mxcp evals`: a real LLM answers each eval's prompt with the project's tools; report as for `test`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import RegistryError
from ..project import Flags
from . import dbt_flags, handle_errors, lock_wait_option
from .output import line
from .report import CaseResult, Reporter, run_options


@click.command("evals")
@dbt_flags
@click.option("--suite", "suite_names", multiple=True, metavar="NAME", help="Run only this suite (repeatable).")
@click.option("--test", "test_names", multiple=True, metavar="NAME",
              help="Run only the evals of this name in the chosen suites (repeatable).")
@click.option("--model", metavar="NAME", help="The model for every suite, over evals.model and the suites' own.")
@run_options("eval")
@lock_wait_option
@handle_errors
def evals_command(flags: Flags, suite_names: tuple[str, ...], test_names: tuple[str, ...], model: str | None,
                  output: str, junit_xml: Path | None, fail_fast: bool, threads: int, lock_wait: float) -> None:
    """Run the LLM evals in evals/*.yml: every tool call the model makes goes through the served pipeline."""
    from ..evals.llm import connection
    from ..evals.runner import run_eval
    from ..evals.suite import EvalCase, load_suites, select_cases
    from ..load import load
    from ..pipeline import open_pipeline

    loaded = load(flags)
    if loaded.problems:
        raise RegistryError(loaded.problems)
    settings = loaded.settings.evals
    suites = load_suites(loaded.project.project_dir, settings.path, loaded.registry)
    cases = select_cases(suites, suite_names, test_names, override=model, default=settings.model)
    if not cases:
        line(f"Nothing to evaluate: no eval suites in {settings.path}/ (see docs/evals.md).", "warning")
        return
    conns = {name: connection(settings, name) for name in {c.model for c in cases}}  # a missing key stops here
    system = loaded.settings.server.instructions  # what served clients pass to their model
    reporter = Reporter(len(cases), "json" if output == "json" else "text", noun="eval")

    def skipped(case: EvalCase) -> CaseResult:
        return CaseResult(case.suite.suite, case.test.name, "skip", 0.0, "skipped: an earlier eval failed "
                          "(--fail-fast)", path=case.path)

    # Evals never change data: write tools get no write database (and so are not offered).
    with open_pipeline(loaded, lock_wait=lock_wait, writes=False) as pipeline:
        reporter.run_all(cases, lambda case: run_eval(pipeline, case, conns[case.model], system), skipped,
                         threads=threads, fail_fast=fail_fast)
    sys.exit(reporter.finish(junit_xml, "dbt-mxcp evals"))
