"""Querying the audit log: `dbt-mxcp log` filters and formats."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (``30m``, ``1h``, ``2d``) or an ISO 8601 time (UTC if no offset)."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: give a duration such as 30m, 1h, 2d, or an ISO time such as "
                          "2026-11-25T09:00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Filters:
    """What `dbt-mxcp log` keeps."""

    since: datetime | None = None
    endpoint: str | None = None
    user: str | None = None
    status: str | None = None
    decision: str | None = None  # "deny": some rule denied; "policy_error": some rule could not be evaluated

    def keep(self, record: dict[str, Any]) -> bool:
        """Whether `record` passes every filter."""
        if self.since is not None:
            try:
                when = datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
            except ValueError:
                return False
            if when < self.since:
                return False
        if self.endpoint is not None and (record.get("endpoint") or {}).get("name") != self.endpoint:
            return False
        if self.user is not None:
            caller = record.get("caller") or {}
            if self.user not in (caller.get("id"), caller.get("email"), caller.get("name")):
                return False
        if self.status is not None and record.get("status") != self.status:
            return False
        if self.decision is not None:
            decisions = record.get("decisions") or []
            if self.decision == "policy_error":
                return any(d.get("error") for d in decisions)
            return any(d.get("matched") and d.get("action") == self.decision for d in decisions)
        return True


def select(records: Iterable[dict[str, Any]], filters: Filters) -> Iterator[dict[str, Any]]:
    """The records `filters` keeps, in log order."""
    return (r for r in records if filters.keep(r))


COLUMNS = ("time", "status", "caller", "endpoint", "rows", "duration_ms", "trace_id", "error")


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a flat row (for text and CSV)."""
    caller = record.get("caller") or {}
    endpoint = record.get("endpoint") or {}
    return {
        "time": record.get("time"),
        "status": record.get("status"),
        "caller": caller.get("id") or caller.get("email") or caller.get("role"),
        "endpoint": f"{endpoint.get('kind')} {endpoint.get('name')}",
        "rows": record.get("rows"),
        "duration_ms": record.get("duration_ms"),
        "trace_id": record.get("trace_id"),
        "error": record.get("error"),
    }
