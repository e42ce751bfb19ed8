"""Results of test-like runs (`test`, `evals`) printed as dbt prints its tests, as JSON, or as JUnit XML.

A line per case as it finishes (``3 of 12 PASS tool search_people: finds_alice ... [PASS in 0.04s]``),
a progress bar under them on a terminal for long runs, the failures again with their reasons, and
dbt's ``Done. PASS=… FAIL=… ERROR=… SKIP=… TOTAL=…`` summary.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeVar
from xml.etree import ElementTree as ET

import click

from .output import line

Status = Literal["pass", "fail", "error", "skip"]
Case = TypeVar("Case")
LINE_WIDTH = 80
PROGRESS_FROM = 20  # cases; shorter runs finish before a bar would help


def run_options(noun: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """The options every test-like command takes: --output, --junit-xml, --fail-fast, --threads."""

    def decorate(func: Callable[..., object]) -> Callable[..., object]:
        options = [
            click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True),
            click.option("--junit-xml", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
                         help="Also write the results as JUnit XML (for CI)."),
            click.option("--fail-fast", "-x", is_flag=True,
                         help=f"Stop at the first failing {noun}; the rest are skipped."),
            click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
                         help=f"How many {noun}s run at once."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@dataclass(frozen=True)
class CaseResult:
    """How one case ended: `fail` when an assertion did not hold, `error` when it could not run."""

    suite: str  # what was tested, e.g. "tool search_people", or the eval suite
    name: str
    status: Status
    duration: float  # seconds
    message: str | None = None  # why it failed, errored or was skipped
    node_id: str | None = None  # the dbt node hosting the endpoint
    path: str | None = None  # the yml file declaring it

    @property
    def title(self) -> str:
        """`suite: name`, as lines and JUnit show it."""
        return f"{self.suite}: {self.name}"


class Reporter:
    """Prints results as they come (thread-safe) and the summary at the end."""

    def __init__(self, total: int, output: Literal["text", "json"] = "text", noun: str = "test") -> None:
        self.total = total
        self.output = output
        self.noun = noun
        self.results: list[CaseResult] = []
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._bar = output == "text" and total >= PROGRESS_FROM and sys.stdout.isatty()

    def case(self, result: CaseResult) -> None:
        """Record one finished case and print its line."""
        with self._lock:
            self.results.append(result)
            if self.output != "text":
                return
            if self._bar:
                click.echo("\r\033[K", nl=False)
            label = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP"}[result.status]
            head = f"{len(self.results)} of {self.total} {label} {result.title} "
            tail = f" [{label} in {result.duration:.2f}s]"
            dots = "." * max(3, LINE_WIDTH - len(head) - len(tail))
            status = {"pass": "ok", "skip": "warning"}.get(result.status, "error")
            line(f"{head}{dots}{tail}", status)
            if self._bar and len(self.results) < self.total:
                done = len(self.results) * 30 // self.total
                click.echo(f"[{'#' * done}{'.' * (30 - done)}] {len(self.results)}/{self.total}", nl=False)

    def run_all(self, cases: Sequence[Case], run: Callable[[Case], CaseResult],
                skipped: Callable[[Case], CaseResult], *, threads: int, fail_fast: bool) -> None:
        """Run `cases` on `threads` threads, reporting each; after a failure with `fail_fast`, the cases
        not yet started are reported as `skipped` gives them."""
        stop = threading.Event()

        def one(case: Case) -> None:
            if stop.is_set():
                self.case(skipped(case))
                return
            result = run(case)
            if fail_fast and result.status in ("fail", "error"):
                stop.set()
            self.case(result)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, cases))

    def finish(self, junit_xml: Path | None = None, name: str = "dbt-mxcp") -> int:
        """Print the summary (text) or every result (json), and write JUnit XML when asked; the exit
        code: 1 when any case failed."""
        if junit_xml is not None:
            write_junit(self.results, junit_xml, name)
        counts = {s: sum(1 for r in self.results if r.status == s) for s in ("pass", "fail", "error", "skip")}
        elapsed = time.perf_counter() - self._started
        failed = counts["fail"] + counts["error"]
        if self.output == "json":
            click.echo(json.dumps({"results": [asdict(r) for r in self.results],
                                   "summary": {**counts, "total": len(self.results),
                                               "elapsed": round(elapsed, 3)}}, indent=2))
            return 1 if failed else 0
        plural = self.noun if len(self.results) == 1 else self.noun + "s"
        line(f"Finished running {len(self.results)} {plural} in {elapsed:.2f}s.")
        if failed:
            line(f"Completed with {failed} failure{'s' if failed != 1 else ''}:", "error")
            for r in self.results:
                if r.status in ("fail", "error"):
                    where = f" ({r.path})" if r.path else ""
                    line(f"{'Failure' if r.status == 'fail' else 'Error'} in {r.title}{where}", "error")
                    for text in (r.message or "").splitlines():
                        line(f"  {text}")
        else:
            line("Completed successfully", "ok")
        line(f"Done. PASS={counts['pass']} FAIL={counts['fail']} ERROR={counts['error']} SKIP={counts['skip']} "
             f"TOTAL={len(self.results)}", "error" if failed else "ok")
        return 1 if failed else 0


def write_junit(results: Sequence[CaseResult], path: Path, name: str) -> None:
    """Write the results as JUnit XML (one testsuite per `suite`), the format CI systems read."""
    root = ET.Element("testsuites", name=name, tests=str(len(results)),
                      failures=str(sum(r.status == "fail" for r in results)),
                      errors=str(sum(r.status == "error" for r in results)),
                      skipped=str(sum(r.status == "skip" for r in results)),
                      time=f"{sum(r.duration for r in results):.3f}")
    suites: dict[str, list[CaseResult]] = {}
    for r in results:
        suites.setdefault(r.suite, []).append(r)
    for suite, cases in suites.items():
        element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                                failures=str(sum(r.status == "fail" for r in cases)),
                                errors=str(sum(r.status == "error" for r in cases)),
                                skipped=str(sum(r.status == "skip" for r in cases)),
                                time=f"{sum(r.duration for r in cases):.3f}")
        for r in cases:
            attrs = {"classname": suite, "name": r.name, "time": f"{r.duration:.3f}"}
            if r.path:
                attrs["file"] = r.path
            case = ET.SubElement(element, "testcase", attrs)
            if r.status in ("fail", "error", "skip"):
                tag = {"fail": "failure", "error": "error", "skip": "skipped"}[r.status]
                first = (r.message or "").splitlines()[0] if r.message else ""
                child = ET.SubElement(case, tag, message=first)
                if r.message and r.status != "skip":
                    child.text = r.message
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
