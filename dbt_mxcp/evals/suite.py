"""Eval suites: ``evals/*.yml`` at the project root, one suite a file.

```yaml
suite: people_questions
model: claude-sonnet-4-5          # optional: overrides evals.model in mxcp.yml
tests:
  - name: finds_anna
    prompt: What is Anna's team?
    user_context: {role: analyst}
    must_call: [{tool: search_people, args: {name_query: anna}}]
    must_not_call: [salary_band]
    answer_contains: [eng]
```
Unknown keys are errors naming the file and the key, as in endpoint declarations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..endpoints import format_validation_error
from ..errors import ConfigError
from ..jsonvalues import to_json_value
from ..project import read_yaml
from ..registry import Registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedCall(_Strict):
    """A tool call the model must make: `args` are matched key by key (others are ignored unless `exact`)."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    exact: bool = False  # the call's arguments must be `args` and nothing more

    @field_validator("args")
    @classmethod
    def _json(cls, v: dict[str, Any]) -> dict[str, Any]:
        # YAML reads an unquoted 2024-01-01 as a date; the model sends JSON text.
        plain: dict[str, Any] = to_json_value(v)
        return plain


class EvalTest(_Strict):
    """One prompt, who asks it, and what must (not) happen while the model answers."""

    name: str = Field(min_length=1)
    description: str | None = None
    prompt: str = Field(min_length=1)
    user_context: dict[str, Any] | None = None  # the caller, as `run --user` takes it
    max_turns: int = Field(default=5, ge=1, le=100)  # model replies allowed; the last must be the answer
    must_call: list[ExpectedCall] = Field(default_factory=list)
    must_not_call: list[str] = Field(default_factory=list)
    answer_contains: list[str] = Field(default_factory=list)  # case-insensitive
    answer_not_contains: list[str] = Field(default_factory=list)


class EvalSuite(_Strict):
    """A file of evals."""

    suite: str = Field(min_length=1)
    description: str | None = None
    model: str | None = None
    system: str | None = None  # the system prompt; default: server.instructions from mxcp.yml
    tests: list[EvalTest] = Field(min_length=1)


@dataclass(frozen=True)
class SuiteFile:
    """A suite and the file it came from (relative to the project)."""

    suite: EvalSuite
    path: str


@dataclass(frozen=True)
class EvalCase:
    """One eval to run, with its suite and the model that answers it."""

    suite: EvalSuite
    test: EvalTest
    path: str
    model: str


def load_suites(project_dir: Path, folder: str, registry: Registry) -> list[SuiteFile]:
    """Every suite under `folder` (sorted by file); ConfigError lists every problem in every file."""
    root = project_dir / folder
    files = sorted([*root.glob("*.yml"), *root.glob("*.yaml")]) if root.is_dir() else []
    problems: list[str] = []
    suites: list[SuiteFile] = []
    for file in files:
        where = file.relative_to(project_dir).as_posix()
        try:
            raw = read_yaml(file)
            suite = EvalSuite.model_validate(raw if raw is not None else {})
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except ValidationError as exc:
            problems.append(f"{where}: {format_validation_error(exc).replace('endpoints.md', 'evals.md')}")
            continue
        problems += [f"{where}: {p}" for p in _check(suite, registry)]
        suites.append(SuiteFile(suite, where))
    seen: dict[str, str] = {}
    for s in suites:
        if s.suite.suite in seen:
            problems.append(f"{s.path}: suite {s.suite.suite!r} is also defined in {seen[s.suite.suite]}")
        seen.setdefault(s.suite.suite, s.path)
    if problems:
        raise ConfigError("invalid eval suites:\n" + "\n".join(f"  - {p}" for p in problems))
    return suites


def _check(suite: EvalSuite, registry: Registry) -> list[str]:
    """Duplicate test names, and tools the assertions name that the project does not have (a typo
    in must_not_call would otherwise always pass)."""
    problems = []
    names = [t.name for t in suite.tests]
    problems += [f"test {n!r} appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    for t in suite.tests:
        for tool in [c.tool for c in t.must_call] + t.must_not_call:
            if registry.get("tool", tool) is None:
                problems.append(f"test {t.name}: unknown tool {tool!r}")
    return problems


def select_cases(suites: Sequence[SuiteFile], suite_names: Sequence[str], test_names: Sequence[str], *,
                 override: str | None, default: str | None) -> list[EvalCase]:
    """The evals chosen by suite and test name, each with its model: `override` (--model), else the
    suite's, else `default` (evals.model)."""
    unknown = [n for n in suite_names if n not in {s.suite.suite for s in suites}]
    if unknown:
        known = ", ".join(s.suite.suite for s in suites) or "none"
        raise ConfigError(f"no eval suite named {', '.join(map(repr, unknown))} (suites: {known})")
    chosen = [s for s in suites if not suite_names or s.suite.suite in suite_names]
    unknown = [n for n in test_names if n not in {t.name for s in chosen for t in s.suite.tests}]
    if unknown:
        raise ConfigError(f"no eval test named {', '.join(map(repr, unknown))} in the chosen suites")
    cases = []
    for s in chosen:
        for t in s.suite.tests:
            if test_names and t.name not in test_names:
                continue
            name = override or s.suite.model or default
            if not name:
                raise ConfigError(f"{s.path}: no model for suite {s.suite.suite!r}: set evals.model in mxcp.yml, "
                                  "`model` in the suite, or --model")
            cases.append(EvalCase(s.suite, t, s.path, name))
    return cases
