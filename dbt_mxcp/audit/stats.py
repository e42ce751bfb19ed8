"""Usage at a glance: `dbt-mxcp log --stats` figures, computed from audit records (after `log`'s filters).

Latency percentiles use the nearest-rank method: the p-th percentile of n durations is the value at
rank ceil(p/100 * n) of the sorted durations, so it is always a duration that was measured.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DENIED = frozenset({"denied", "policy_error"})  # the call was refused; every other non-ok status is an error
HOURLY_SPAN = timedelta(hours=48)  # periods up to this long are charted per hour, longer ones per day
TOP = 10  # denial and error reasons listed
REASON_CHARS = 200  # reasons are cut to this length (an error message can be long)


@dataclass(frozen=True)
class Usage:
    """The calls of one endpoint, one caller, or all of them."""

    name: str
    calls: int = 0
    ok: int = 0
    denied: int = 0
    errors: int = 0
    rows: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    last: str | None = None


@dataclass(frozen=True)
class Bucket:
    """The calls that ended within one hour or day (`start`, UTC)."""

    start: str
    calls: int = 0
    denied: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Reason:
    """A denial or error message and how many calls ended with it."""

    reason: str
    count: int


@dataclass(frozen=True)
class Stats:
    """Everything `log --stats` and `log --html` show."""

    totals: Usage
    first: str | None = None
    last: str | None = None
    bucket: str = "hour"
    timeline: list[Bucket] = field(default_factory=list)
    endpoints: list[Usage] = field(default_factory=list)
    callers: list[Usage] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    denials: list[Reason] = field(default_factory=list)
    errors: list[Reason] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stats as plain JSON values."""
        return asdict(self)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank `pct`-th percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def endpoint_of(record: dict[str, Any]) -> str:
    """A record's endpoint as `log` shows it: ``kind name``."""
    endpoint = record.get("endpoint") or {}
    return f"{endpoint.get('kind')} {endpoint.get('name')}"


def caller_of(record: dict[str, Any]) -> str:
    """A record's caller: its id, email or name, else ``role <role>``, else ``anonymous``."""
    caller = record.get("caller") or {}
    for key in ("id", "email", "name"):
        if caller.get(key):
            return str(caller[key])
    role = caller.get("role")
    return f"role {role}" if role and role != "anonymous" else "anonymous"  # unauthenticated: role "anonymous"


def outcome(record: dict[str, Any]) -> str:
    """``ok``, ``denied`` or ``error``."""
    status = record.get("status")
    return "ok" if status == "ok" else "denied" if status in DENIED else "error"


def _when(record: dict[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)  # buckets are UTC


def usage(name: str, records: Sequence[dict[str, Any]]) -> Usage:
    """The figures of `records`, labelled `name`."""
    outcomes = Counter(outcome(r) for r in records)
    durations = [float(r["duration_ms"]) for r in records if isinstance(r.get("duration_ms"), int | float)]
    times = [t for t in (_when(r) for r in records) if t is not None]
    return Usage(name=name, calls=len(records), ok=outcomes["ok"], denied=outcomes["denied"],
                 errors=outcomes["error"], rows=sum(r.get("rows") or 0 for r in records),
                 p50_ms=percentile(durations, 50), p95_ms=percentile(durations, 95),
                 max_ms=max(durations) if durations else None, last=_iso(max(times)) if times else None)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _grouped(records: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> list[Usage]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return sorted((usage(k, v) for k, v in groups.items()), key=lambda u: (-u.calls, u.name))


def timeline(records: Sequence[dict[str, Any]]) -> tuple[str, list[Bucket]]:
    """Calls per hour (a period up to 48 hours) or per day, every bucket from the first call to the last."""
    times = [(t, outcome(r)) for r in records if (t := _when(r)) is not None]
    if not times:
        return "hour", []
    first, last = min(t for t, _ in times), max(t for t, _ in times)
    hourly = last - first <= HOURLY_SPAN
    step = timedelta(hours=1) if hourly else timedelta(days=1)

    def floor(moment: datetime) -> datetime:
        moment = moment.replace(minute=0, second=0, microsecond=0)
        return moment if hourly else moment.replace(hour=0)

    counts: dict[datetime, Counter[str]] = defaultdict(Counter)
    for moment, kind in times:
        counts[floor(moment)][kind] += 1
    out = []
    start = floor(first)
    while start <= last:  # empty buckets too: a chart's gaps are part of the picture
        c = counts.get(start, Counter())
        out.append(Bucket(_iso(start), sum(c.values()), c["denied"], c["error"]))
        start += step
    return ("hour" if hourly else "day"), out


def _reasons(texts: Iterable[str]) -> list[Reason]:
    return [Reason(t, n) for t, n in Counter(t[:REASON_CHARS] for t in texts).most_common(TOP)]


def compute(records: Iterable[dict[str, Any]]) -> Stats:
    """The usage stats of `records`."""
    kept = list(records)
    totals = usage("all", kept)
    if not kept:
        return Stats(totals=totals)
    bucket, buckets = timeline(kept)
    times = [t for t in (_when(r) for r in kept) if t is not None]
    return Stats(
        totals=totals,
        first=_iso(min(times)) if times else None,
        last=totals.last,
        bucket=bucket,
        timeline=buckets,
        endpoints=_grouped(kept, endpoint_of),
        callers=_grouped(kept, caller_of),
        statuses=dict(Counter(str(r.get("status")) for r in kept).most_common()),
        denials=_reasons(str(r.get("error") or r.get("status")) for r in kept if outcome(r) == "denied"),
        errors=_reasons(f"{r.get('status')}: {r['error']}" if r.get("error") else str(r.get("status"))
                        for r in kept if outcome(r) == "error"),
    )


USAGE_HEADERS = ["calls", "ok", "denied", "errors", "rows", "p50 ms", "p95 ms", "max ms", "last call"]


def usage_row(u: Usage) -> list[str]:
    """One table row (after the name column) for the terminal and HTML tables."""
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    return [str(u.calls), str(u.ok), str(u.denied), str(u.errors), str(u.rows), ms(u.p50_ms), ms(u.p95_ms),
            ms(u.max_ms), u.last or ""]
