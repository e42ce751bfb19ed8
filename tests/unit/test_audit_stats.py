"""`log --stats` figures from hand-built records, and the HTML report's escaping."""

from __future__ import annotations

import re
from typing import Any

from dbt_mxcp.audit.report_html import render
from dbt_mxcp.audit.stats import caller_of, compute, percentile

EVIL = "<script>alert(1)</script>"


def _record(time: str, name: str, caller: str | None, status: str = "ok", rows: int | None = None,
            ms: float = 1.0, error: str | None = None, kind: str = "tool") -> dict[str, Any]:
    return {"time": time, "caller": {"id": caller, "email": None, "name": None, "role": None, "groups": []},
            "endpoint": {"kind": kind, "name": name, "node": None}, "status": status, "rows": rows,
            "duration_ms": ms, "error": error, "decisions": []}


RECORDS = [
    _record("2026-01-05T09:10:00.000000Z", "get_person", "ann", rows=1, ms=10.0),
    _record("2026-01-05T09:20:00.000000Z", "get_person", "bob", rows=1, ms=30.0),
    _record("2026-01-05T09:59:59.999999Z", "get_person", "ann", "no_row", ms=20.0, error="no row found"),
    _record("2026-01-05T11:00:00.000000Z", "salary_band", "bob", "denied", ms=2.0, error="HR only"),
    _record("2026-01-05T11:30:00.000000Z", "salary_band", "ann", rows=7, ms=40.0),
    _record("2026-01-05T11:45:00.000000Z", "salary_band", "bob", "policy_error", ms=3.0, error="bad rule"),
    _record("2026-01-05T12:00:00.000000Z", "salary_band", None, "denied", ms=5.0, error="HR only"),
]


def test_nearest_rank_percentile() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the textbook example: p30 = 20, p40 = 20, p50 = 35, p100 = 50
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15.0, 20.0, 20.0, 35.0, 50.0]
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_figures_per_endpoint_caller_and_overall() -> None:
    stats = compute(RECORDS)
    t = stats.totals
    assert (t.calls, t.ok, t.denied, t.errors, t.rows) == (7, 3, 3, 1, 9)
    # sorted durations 2,3,5,10,20,30,40: rank ceil(.5*7)=4 -> 10, rank ceil(.95*7)=7 -> 40
    assert (t.p50_ms, t.p95_ms, t.max_ms) == (10.0, 40.0, 40.0)
    assert (stats.first, stats.last) == ("2026-01-05T09:10:00Z", "2026-01-05T12:00:00Z")

    by_endpoint = {u.name: u for u in stats.endpoints}
    assert [u.name for u in stats.endpoints] == ["tool salary_band", "tool get_person"]  # most calls first
    person = by_endpoint["tool get_person"]
    # durations 10,20,30: p50 rank 2 -> 20, p95 rank 3 -> 30
    assert (person.calls, person.ok, person.denied, person.errors, person.rows) == (3, 2, 0, 1, 2)
    assert (person.p50_ms, person.p95_ms, person.max_ms, person.last) == (20.0, 30.0, 30.0, "2026-01-05T09:59:59Z")
    band = by_endpoint["tool salary_band"]
    # durations 2,3,5,40: p50 rank 2 -> 3, p95 rank 4 -> 40
    assert (band.calls, band.ok, band.denied, band.errors, band.rows) == (4, 1, 3, 0, 7)
    assert (band.p50_ms, band.p95_ms, band.max_ms) == (3.0, 40.0, 40.0)

    by_caller = {u.name: (u.calls, u.ok, u.denied, u.errors, u.rows) for u in stats.callers}
    assert by_caller == {"ann": (3, 2, 0, 1, 8), "bob": (3, 1, 2, 0, 1), "anonymous": (1, 0, 1, 0, 0)}
    assert stats.statuses == {"ok": 3, "denied": 2, "no_row": 1, "policy_error": 1}
    assert [(r.reason, r.count) for r in stats.denials] == [("HR only", 2), ("bad rule", 1)]
    assert [(r.reason, r.count) for r in stats.errors] == [("no_row: no row found", 1)]


def test_timeline_is_hourly_for_short_periods_with_empty_hours() -> None:
    stats = compute(RECORDS)
    assert stats.bucket == "hour"
    assert [(b.start[11:13], b.calls, b.denied, b.errors) for b in stats.timeline] == [
        ("09", 3, 0, 1), ("10", 0, 0, 0), ("11", 3, 2, 0), ("12", 1, 1, 0)]


def test_timeline_is_daily_for_long_periods() -> None:
    stats = compute([_record("2026-01-01T23:00:00Z", "a", "x"), _record("2026-01-04T01:00:00Z", "a", "x"),
                     _record("2026-01-04T22:00:00Z", "a", "x", "denied")])
    assert stats.bucket == "day"
    assert [(b.start, b.calls, b.denied) for b in stats.timeline] == [
        ("2026-01-01T00:00:00Z", 1, 0), ("2026-01-02T00:00:00Z", 0, 0), ("2026-01-03T00:00:00Z", 0, 0),
        ("2026-01-04T00:00:00Z", 2, 1)]


def test_json_is_plain_values() -> None:
    data = compute(RECORDS).to_json()
    assert data["totals"]["calls"] == 7 and data["endpoints"][0]["name"] == "tool salary_band"
    assert data["timeline"][0] == {"start": "2026-01-05T09:00:00Z", "calls": 3, "denied": 0, "errors": 1}


def test_html_escapes_every_record_value() -> None:
    records = [*RECORDS, _record("2026-01-05T12:30:00Z", EVIL, EVIL, "execution", error=EVIL, kind=EVIL)]
    page = render(compute(records), f"usage {EVIL}")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") >= 2 and "tool get_person" in page
    assert not re.search(r"https?://", page.replace("http://www.w3.org", ""))  # nothing fetched from the network


def test_empty_log_says_no_calls() -> None:
    stats = compute([])
    assert stats.totals.calls == 0 and stats.timeline == [] and stats.endpoints == []
    assert stats.totals.p50_ms is None
    assert "No calls recorded" in render(stats, "usage")


def test_caller_without_identity_is_named_by_role() -> None:
    assert caller_of({"caller": {"id": None, "role": "admin"}}) == "role admin"
    assert caller_of({"caller": {"id": None, "role": "anonymous"}}) == caller_of({}) == "anonymous"
    assert caller_of({"caller": {"id": None, "email": "ann@example.com", "role": "admin"}}) == "ann@example.com"
