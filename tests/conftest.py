"""Shared fixtures: real dbt builds of integration_tests/ and examples/shop on real DuckDB files."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, Project, copy_project, run


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The async tests run on asyncio (the MCP SDK's own choice)."""
    return "asyncio"


@pytest.fixture(scope="session")
def dsn() -> str:
    """The throwaway PostgreSQL that run-tests.sh starts; without it, Postgres tests skip and say so."""
    value = os.environ.get("DBT_MXCP_TEST_PG_DSN")
    if not value:
        pytest.skip("NO POSTGRESQL: DBT_MXCP_TEST_PG_DSN is not set; ./run-tests.sh starts a PostgreSQL for "
                    "these tests")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run tests/reliability at full length (soak minutes, more fuzzing examples)")


@pytest.fixture(scope="session")
def it_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """integration_tests/, installed with `dbt deps` and built with `dbt build` (shared; do not modify)."""
    project = Project(copy_project(REPO / "integration_tests", tmp_path_factory.mktemp("it") / "integration_tests"))
    project.dbt("deps")
    project.dbt("build")
    yield project


@pytest.fixture(scope="session")
def shop_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """examples/shop with its seeds generated and `dbt build` run (shared; do not modify)."""
    project = Project(copy_project(REPO / "examples" / "shop", tmp_path_factory.mktemp("shop") / "shop"))
    run([sys.executable, "scripts/generate_seeds.py"], project.path)
    project.dbt("build")
    yield project


@pytest.fixture
def fresh_it_project(tmp_path: Path) -> Project:
    """A private, unbuilt copy of integration_tests/ (for tests that edit yml), with deps installed."""
    project = Project(copy_project(REPO / "integration_tests", tmp_path / "integration_tests"))
    project.dbt("deps")
    return project
