"""Errors a user sees. Each names what was wrong and how to fix it; none carries a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class MxcpError(Exception):
    """Base of every error dbt-mxcp reports to a user."""

    exit_code = 2


class ConfigError(MxcpError):
    """A usage or configuration problem: missing project, profile, manifest, bad flag."""


class WarehouseError(MxcpError):
    """The warehouse cannot be opened or queried as configured."""

    exit_code = 1


@dataclass(frozen=True)
class EndpointProblem:
    """One problem in one endpoint declaration, located by yml file, dbt node and endpoint."""

    file: str
    node: str
    endpoint: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.node}"
        if self.endpoint:
            where += f": {self.endpoint}"
        return f"{where}: {self.message}"


class RegistryError(MxcpError):
    """The project's endpoint declarations are invalid."""

    exit_code = 1

    def __init__(self, problems: list[EndpointProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in mxcp endpoint declarations:\n{lines}")


class CallError(MxcpError):
    """A call that could not be answered: bad arguments, a denial, a failed or timed-out query.

    `kind` is one of: not_found, invalid_arguments, denied, policy_error, execution,
    timeout, no_row, invalid_result.
    """

    exit_code = 1

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)
