"""Rate limits per caller and per endpoint: token buckets, in memory, per server process.

A bucket holds `calls` tokens and refills at `calls / per_seconds` a second; a call takes one token
or is refused with the time to wait. One caller's flood empties only its own bucket, so other
callers keep their latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from .errors import CallError


class _Bucket:
    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def caller_key(user: Mapping[str, Any]) -> str:
    """Whose bucket a call draws from: the caller's id or email, else their role."""
    return str(user.get("id") or user.get("email") or f"role:{user.get('role')}")


class RateLimiter:
    """Buckets for the `rate_limits` of mxcp.yml (`per_caller`, `per_endpoint`)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, endpoint_label: str, user: Mapping[str, Any]) -> None:
        """Take a token from the caller's and the endpoint's bucket, or refuse the call."""
        limits = [("caller", caller_key(user), self.settings.per_caller),
                  ("endpoint", endpoint_label, self.settings.per_endpoint)]
        now = time.monotonic()
        with self._lock:
            for scope, key, limit in limits:
                if limit is None:
                    continue
                bucket = self._buckets.get((scope, key))
                if bucket is None:
                    bucket = self._buckets[(scope, key)] = _Bucket(limit.calls, limit.calls / limit.per_seconds)
                wait = bucket.take(now)
                if wait:
                    who = "this caller" if scope == "caller" else endpoint_label
                    raise CallError("rate_limited", f"rate limit reached: at most {limit.calls} calls per "
                                                    f"{limit.per_seconds:g} s for {who}; retry in {wait:.1f} s")
