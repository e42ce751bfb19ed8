"""Rate limits per caller and per endpoint, through the real pipeline on a built warehouse."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from dbt_mxcp.errors import CallError
from dbt_mxcp.load import load
from dbt_mxcp.pipeline import Pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.ratelimit import RateLimiter
from dbt_mxcp.settings import RateLimit, RateLimitSettings
from dbt_mxcp.warehouse import open_warehouse
from tests.helpers import Project


@pytest.fixture
def make_pipeline(it_project: Project) -> Iterator[Callable[[RateLimitSettings], Pipeline]]:
    """Pipelines over the built integration project, each with its own rate limiter."""
    path = str(it_project.path)
    loaded = load(Flags(project_dir=path, profiles_dir=path))
    warehouse = open_warehouse(loaded.require_warehouse())
    yield lambda settings: Pipeline(loaded.registry, warehouse, rate_limiter=RateLimiter(settings))
    warehouse.close()


def test_a_flooding_caller_is_limited_and_others_are_not(make_pipeline: Callable[[RateLimitSettings],
                                                                                 Pipeline]) -> None:
    pipeline = make_pipeline(RateLimitSettings(per_caller=RateLimit(calls=3, per_seconds=60)))
    for _ in range(3):
        pipeline.call_tool("get_person", {"id": 1}, {"id": "flood"})
    with pytest.raises(CallError) as info:
        pipeline.call_tool("get_person", {"id": 1}, {"id": "flood"})
    assert info.value.kind == "rate_limited" and "at most 3 calls per 60 s" in str(info.value)
    started = time.perf_counter()
    assert pipeline.call_tool("get_person", {"id": 1}, {"id": "quiet"}).value["name"] == "Ann"
    assert time.perf_counter() - started < 1  # the other caller is answered at once


def test_endpoint_limit_refills(make_pipeline: Callable[[RateLimitSettings], Pipeline]) -> None:
    pipeline = make_pipeline(RateLimitSettings(per_endpoint=RateLimit(calls=2, per_seconds=0.5)))
    pipeline.call_tool("get_person", {"id": 1}, {"id": "a"})
    pipeline.call_tool("get_person", {"id": 1}, {"id": "b"})
    with pytest.raises(CallError, match="tool get_person"):
        pipeline.call_tool("get_person", {"id": 1}, {"id": "c"})
    time.sleep(0.3)  # 2 calls per 0.5 s: a token is back after 0.25 s
    assert pipeline.call_tool("get_person", {"id": 1}, {"id": "c"}).value["id"] == 1
    assert pipeline.call_tool("get_team", {"team": "hr"}, {"id": "c"}).value["team"] == "hr"  # another endpoint
