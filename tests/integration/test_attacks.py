"""Attack cases through the real pipeline: resource-URI traversal and injection, homoglyph identities."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbt_mxcp.errors import CallError
from dbt_mxcp.load import load
from dbt_mxcp.pipeline import Pipeline
from dbt_mxcp.project import Flags
from dbt_mxcp.warehouse import open_warehouse
from tests.helpers import Project


@pytest.fixture(scope="module")
def pipeline(it_project: Project) -> Iterator[Pipeline]:
    path = str(it_project.path)
    loaded = load(Flags(project_dir=path, profiles_dir=path))
    warehouse = open_warehouse(loaded.require_warehouse())
    yield Pipeline(loaded.registry, warehouse)
    warehouse.close()


@pytest.mark.parametrize("uri", [
    "people://../../etc/passwd",        # a variable never spans a '/'
    "people://1/../2",
    "people://",
    "file:///etc/passwd",               # no such resource
    "people://1%27%20OR%20%271%27=%271",  # decoded, then refused as not an integer
    "people://1%2F..%2F..",
])
def test_resource_uris_cannot_escape_or_inject(pipeline: Pipeline, uri: str) -> None:
    with pytest.raises(CallError) as info:
        pipeline.read_resource(uri)
    assert info.value.kind in ("not_found", "invalid_arguments")


@pytest.mark.parametrize("role", ["\u0430dmin", "ADMIN", "admin\u200b", "\u202eadmin"])
def test_look_alike_roles_are_not_admin(pipeline: Pipeline, role: str) -> None:
    # Cyrillic a (U+0430), another case, a zero-width space, an RTL override: compared code point by code point.
    rows = pipeline.call_tool("search_people", {"name_query": "ann"}, {"role": role}).value
    assert rows and {r["email"] for r in rows} == {"****"}
    admin = pipeline.call_tool("search_people", {"name_query": "ann"}, {"role": "admin"}).value
    assert "****" not in {r["email"] for r in admin}
