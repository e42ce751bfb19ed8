"""Running endpoint SQL: bound parameters, rows fetched in batches under a row and byte cap, a deadline."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .errors import CallError
from .jsonvalues import dumps, to_json_value

if TYPE_CHECKING:
    from .types import TypeDef
    from .warehouse import Cursor

FETCH_BATCH = 1000


@dataclass(frozen=True)
class Limits:
    """Caps on one call: rows returned, bytes of JSON returned, seconds of query time."""

    max_rows: int = 1000
    max_bytes: int = 10_000_000
    timeout: float = 30.0


class _Watchdog:
    """One thread for every deadline: calls `callback` when `deadline` passes unless cancelled first.

    (A timer thread per call would cost more than many of the queries it watches.)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, callback: Callable[[], None]) -> int:
        """Arrange for `callback` in `seconds`; returns a token for `cancel`."""
        token = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dbt-mxcp-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        """The call finished in time."""
        with self._cond:
            self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, token, callback = self._heap[0]
                if token in self._cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled.discard(token)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            callback()


_watchdog = _Watchdog()


class Interrupter:
    """Lets another thread stop a call's running query (an MCP cancellation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: Cursor | None = None
        self.cancelled = False

    def attach(self, cursor: Cursor) -> None:
        """Watch `cursor`; a call cancelled before its query starts fails at once."""
        with self._lock:
            if self.cancelled:
                raise CallError("cancelled", "the call was cancelled")
            self._cursor = cursor

    def interrupt(self) -> None:
        """Cancel the call, interrupting its query if one is running."""
        with self._lock:
            self.cancelled = True
            if self._cursor is not None:
                self._cursor.interrupt()


@dataclass
class QueryResult:
    """Rows (as JSON-ready dicts) and the columns they came with."""

    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]]
    truncated: bool = False
    truncated_by: str | None = None


def run_query(cursor: Cursor, sql: str, params: Mapping[str, Any], limits: Limits,
              interrupter: Interrupter | None = None, types: Mapping[str, TypeDef | None] | None = None,
              ) -> QueryResult:
    """Execute `sql` with `params` bound; stop at the row or byte cap; interrupt past the deadline."""
    if interrupter is not None:
        interrupter.attach(cursor)
    expired = threading.Event()

    def interrupt() -> None:
        expired.set()
        cursor.interrupt()

    token = _watchdog.watch(limits.timeout, interrupt)
    try:
        columns = cursor.execute(sql, params, limits.timeout, types)
        names = [c[0] for c in columns]
        # DuckDB hands JSON columns over as text; the result carries the JSON value itself.
        decoders = [_decode_json if type_name == "JSON" else to_json_value for _, type_name in columns]
        rows: list[dict[str, Any]] = []
        size = 0
        truncated_by = None
        while truncated_by is None:
            batch = cursor.fetchmany(min(FETCH_BATCH, limits.max_rows + 1 - len(rows)))
            if not batch:
                break
            for values in batch:
                if len(rows) == limits.max_rows:
                    truncated_by = "max_rows"
                    break
                row = {name: decode(v) for name, decode, v in zip(names, decoders, values, strict=True)}
                size += len(dumps(row)) + 1
                if size > limits.max_bytes:
                    truncated_by = "max_bytes"
                    break
                rows.append(row)
        return QueryResult(columns, rows, truncated_by is not None, truncated_by)
    except cursor.errors as exc:
        if interrupter is not None and interrupter.cancelled:
            raise CallError("cancelled", "the call was cancelled") from None
        if expired.is_set() or cursor.interrupted(exc):
            raise CallError("timeout", f"the query ran past its {limits.timeout:g} s deadline and was "
                                       "interrupted; narrow it with more specific arguments") from None
        raise CallError("execution", f"query failed: {first_line(str(exc))}") from None
    finally:
        _watchdog.cancel(token)


def _decode_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value, parse_float=Decimal)
        except json.JSONDecodeError:
            return value
    return to_json_value(value)


def describe(cursor: Cursor, sql: str, params: Mapping[str, Any],
             types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
    """The result columns (name, type name) `sql` would return, without returning rows."""
    try:
        return cursor.describe(sql, params, types)
    except cursor.errors as exc:
        raise CallError("execution", first_line(str(exc))) from None


def first_line(text: str) -> str:
    """The first line of a database error (the rest is context a caller does not need)."""
    return text.strip().splitlines()[0] if text.strip() else text
