"""`dbt-mxcp log --stats` and `--html` over the records of real `dbt-mxcp run` calls."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import Project

HR = {"id": "ann", "groups": ["hr"]}
STAFF = {"id": "bob", "groups": ["staff"]}


def _stats(project: Project, *args: str) -> dict[str, Any]:
    return dict(json.loads(project.mxcp("log", "--stats", "-o", "json", *args).stdout))


def test_stats_count_the_calls_made(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    band = project.call("tool", "salary_band", "band_min=0", "band_max=100000", user=HR)
    assert project.call("tool", "get_person", "id=1", user=HR)["id"] == 1
    assert project.call("tool", "get_person", "id=2")["id"] == 2
    denied = project.mxcp("run", "tool", "salary_band", "--param", "band_min=0", "--user", json.dumps(STAFF),
                          check=False)
    assert denied.returncode == 1
    missing = project.mxcp("run", "tool", "get_person", "--param", "id=999", "--user", json.dumps(STAFF),
                           check=False)
    assert missing.returncode == 1

    stats = _stats(project)
    t = stats["totals"]
    assert (t["calls"], t["ok"], t["denied"], t["errors"], t["rows"]) == (5, 3, 1, 1, len(band) + 2)
    endpoints = {e["name"]: (e["calls"], e["ok"], e["denied"], e["errors"], e["rows"]) for e in stats["endpoints"]}
    assert endpoints == {"tool salary_band": (2, 1, 1, 0, len(band)), "tool get_person": (3, 2, 0, 1, 2)}
    callers = {c["name"]: (c["calls"], c["ok"], c["denied"], c["errors"]) for c in stats["callers"]}
    assert callers == {"ann": (2, 2, 0, 0), "bob": (2, 0, 1, 1), "anonymous": (1, 1, 0, 0)}
    assert [d["count"] for d in stats["denials"]] == [1] and "HR only" in stats["denials"][0]["reason"]
    assert stats["errors"][0]["reason"].startswith("no_row")
    assert stats["bucket"] == "hour" and sum(b["calls"] for b in stats["timeline"]) == 5
    assert t["max_ms"] >= t["p95_ms"] >= t["p50_ms"] > 0

    # the log's filters apply first
    assert _stats(project, "--since", "1h")["totals"]["calls"] == 5
    assert _stats(project, "--user", "bob")["totals"]["calls"] == 2
    empty = project.mxcp("log", "--stats", "--since", "2999-01-01T00:00:00").stdout
    assert "No calls recorded" in empty

    text = project.mxcp("log", "--stats").stdout
    assert "tool salary_band" in text and "ann" in text and "HR only" in text

    report = project.path / "usage.html"
    proc = project.mxcp("log", "--html", str(report))
    assert proc.stdout == "" and "5 call(s)" in proc.stderr
    page = report.read_text()
    assert "tool salary_band" in page and "tool get_person" in page and "<svg" in page
