"""What a Python endpoint can use while it runs. Import it in the endpoint's file:

```python
from dbt_mxcp import runtime

def top_customers(country: str, limit: int = 5) -> list[dict]:
    runtime.progress(0, 2, "querying")
    rows = runtime.db.execute("select * from customers where country = $c order by revenue desc limit $n",
                              {"c": country, "n": limit})
    runtime.log("info", f"{len(rows)} rows for {runtime.user['id']}")
    return rows
```

`runtime.db` reads the warehouse under the same rules as SQL endpoints: read-only, bound
parameters, the call's row/byte caps and deadline. `runtime.user` is the caller; `runtime.settings`
the server's settings. Outside a call, using them raises a clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# MCP's (RFC 5424) level names onto Python's.
_LEVELS = {"debug": 10, "info": 20, "notice": 20, "warning": 30, "error": 40, "critical": 50, "alert": 50,
           "emergency": 50}


@dataclass(frozen=True)
class CallContext:
    """The running call, as the runtime API sees it."""

    user: Mapping[str, Any]
    execute: Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]
    settings: Any
    report: Callable[[float, float | None, str | None], None] | None = None
    send_log: Callable[[str, str], None] | None = None


_current: ContextVar[CallContext | None] = ContextVar("dbt_mxcp_call", default=None)


def _call() -> CallContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("dbt_mxcp.runtime is only available while dbt-mxcp runs a Python endpoint")
    return ctx


class _Database:
    """The warehouse, read-only, for the running call."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run `sql` with `params` bound as ``$name``; the rows as dicts (capped like any call)."""
        return _call().execute(sql, params or {})


db = _Database()


class _User(Mapping[str, Any]):
    """The caller (`id`, `email`, `name`, `role`, `groups`, `scopes`, `claims`)."""

    def __getitem__(self, key: str) -> Any:
        return _call().user[key]

    def __iter__(self) -> Any:
        return iter(_call().user)

    def __len__(self) -> int:
        return len(_call().user)


user = _User()


def __getattr__(name: str) -> Any:
    if name == "settings":
        return _call().settings
    raise AttributeError(f"module 'dbt_mxcp.runtime' has no attribute {name!r}")


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report progress to the MCP client, when it asked for it (no-op otherwise)."""
    ctx = _call()
    if ctx.report is not None:
        ctx.report(done, total, message)


def log(level: str, message: str) -> None:
    """Log a message (``debug`` … ``error``): to the server's log, and to the MCP client where the
    protocol allows."""
    ctx = _call()
    logging.getLogger("dbt_mxcp.endpoint").log(_LEVELS.get(level.lower(), logging.INFO), message)
    if ctx.send_log is not None:
        ctx.send_log(level, message)
