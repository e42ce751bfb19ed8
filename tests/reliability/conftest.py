"""The reliability suite: bounded in CI, longer with `--long` (or DBT_MXCP_RELIABILITY_LONG=1; the option
is declared in tests/conftest.py, where pytest reads options).

Tests size themselves with the `scale` fixture: `scale.pick(ci, long)` returns the bounded value
in CI and the larger one for a local run, so one test serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import pytest

T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """How hard the reliability tests push: bounded for CI, or long."""

    long: bool

    def pick(self, ci: T, long: T) -> T:
        """The CI value, or the long one under --long."""
        return long if self.long else ci


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    return Scale(bool(request.config.getoption("--long")) or os.environ.get("DBT_MXCP_RELIABILITY_LONG") == "1")
