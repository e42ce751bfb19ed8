"""The serving connection to a dbt-postgres warehouse: read-only transactions, bound parameters, a timeout.

Every connection is opened with ``default_transaction_read_only`` and psycopg's read-only mode,
so no statement can change dbt's relations (PostgreSQL refuses writes in a read-only
transaction); each call runs in its own transaction, rolled back when it ends. Parameters are
sent apart from the SQL (``$name`` becomes ``$1``, bound by the server), and a server-side
``statement_timeout`` backs up the engine's own deadline in case this process dies mid-query.

Unlike DuckDB there is no snapshot: `dbt run` on PostgreSQL swaps relations inside transactions,
so a call sees the old or the new relation, never half of one, and any number of servers can
read while dbt writes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..engine import first_line
from ..errors import CallError, WarehouseError
from ..project import PostgresConfig
from ..sql import to_positional
from ..types import TypeDef
from . import group_columns

_IDLE_KEPT = 16  # connections kept open between calls; more are opened under load and closed after


@lru_cache(maxsize=1024)
def _positional(sql: str, casts: tuple[tuple[str, str], ...] = ()) -> tuple[str, tuple[str, ...]]:
    text, names = to_positional(sql, dict(casts))
    return text, tuple(names)


def pg_type(t: TypeDef | None) -> str:
    """The PostgreSQL type for a declared parameter type (text when unknown)."""
    if t is None:
        return "text"
    if t.type == "string":
        return {"date": "date", "date-time": "timestamptz", "timestamp": "timestamp", "time": "time"}.get(
            t.format or "", "text")
    if t.type == "array":
        return pg_type(t.items) + "[]"
    return {"integer": "bigint", "number": "numeric", "boolean": "boolean", "object": "jsonb"}.get(t.type, "text")


def _json_loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)  # exact numbers, as DuckDB's JSON columns give


class PostgresCursor:
    """One call's connection, taken from the warehouse's pool and given back by `close`."""

    def __init__(self, warehouse: PostgresWarehouse, conn: Any, reused: bool) -> None:
        import psycopg

        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._warehouse = warehouse
        self._conn = conn
        self._reused = reused
        self._cursor = conn.cursor()

    def execute(self, sql: str, params: Mapping[str, Any], timeout: float | None = None,
                types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """Run `sql` in a read-only transaction.

        The server infers each parameter's type from where it is used; where it cannot (as in
        ``$x is null or col = $x``), the SQL runs again with the declared types cast in, and
        keeps them from then on. A pooled connection found dead is replaced once.
        """
        import psycopg

        casts = self._warehouse.casts_for(sql, types)
        try:
            self._run(sql, casts, params, timeout)
        except (psycopg.errors.IndeterminateDatatype, psycopg.errors.AmbiguousParameter):
            if casts or types is None:
                raise
            self._conn.rollback()
            casts = self._warehouse.remember_casts(sql, types)
            self._run(sql, casts, params, timeout)
        except psycopg.OperationalError:
            if not (self._reused and self._conn.broken):
                raise
            # The server restarted or dropped the idle connection: reading again on a new one is safe.
            self._conn.close()
            self._conn, self._reused = self._warehouse.connect(), False
            self._cursor = self._conn.cursor()
            self._run(sql, casts, params, timeout)
        return [(d.name, _type_name(d.type_code)) for d in self._cursor.description or []]

    def _run(self, sql: str, casts: tuple[tuple[str, str], ...], params: Mapping[str, Any],
             timeout: float | None) -> None:
        text, names = _positional(sql, casts)
        if timeout is not None:
            self._warehouse.set_timeout(self._conn, timeout)
        self._cursor.execute(text, [_bind(params.get(name)) for name in names])

    def fetchmany(self, size: int) -> Sequence[Sequence[Any]]:
        """Up to `size` more rows."""
        rows: Sequence[Sequence[Any]] = self._cursor.fetchmany(size)
        return rows

    def describe(self, sql: str, params: Mapping[str, Any],
                 types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """The columns of `sql` (a ``select * from (...)`` subquery), from running it with ``limit 0``."""
        return self.execute(f"{sql} limit 0", params, types=types)

    def interrupt(self) -> None:
        """Ask the server to cancel the running statement."""
        import psycopg

        with contextlib.suppress(psycopg.Error):
            self._conn.cancel_safe(timeout=2.0)

    def interrupted(self, exc: BaseException) -> bool:
        """A cancelled statement, or one past statement_timeout, raises QueryCanceled."""
        import psycopg

        return isinstance(exc, psycopg.errors.QueryCanceled)

    def close(self) -> None:
        """End the call's transaction and give the connection back."""
        self._warehouse.give_back(self._conn)


class PostgresWarehouse:
    """A pool of read-only connections to the target's database."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._idle: list[Any] = []
        self._guard = threading.Lock()
        self._timeouts: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()  # statement_timeout set
        self._casts: dict[str, tuple[tuple[str, str], ...]] = {}  # SQL whose parameters need their types cast in

    def open(self) -> None:
        """Connect now, so a wrong host, password or database fails at start."""
        self.give_back(self.connect())

    def connect(self) -> Any:
        """A new read-only connection (WarehouseError naming the target when it fails)."""
        import psycopg
        from psycopg import sql
        from psycopg.types.json import set_json_loads

        cfg = self.config
        options = "-c default_transaction_read_only=on"
        search_path = cfg.search_path or cfg.schema
        kwargs: dict[str, Any] = dict(cfg.options)
        if cfg.sslmode:
            kwargs["sslmode"] = cfg.sslmode
        try:
            conn = psycopg.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password or None,
                                   dbname=cfg.database, connect_timeout=cfg.connect_timeout,
                                   application_name="dbt-mxcp", options=options, cursor_factory=psycopg.RawCursor,
                                   **kwargs)
        except psycopg.Error as exc:
            detail = first_line(str(exc))
            if cfg.password:
                detail = detail.replace(cfg.password, "[password]")
            raise WarehouseError(f"cannot connect to the PostgreSQL warehouse of target {cfg.target!r} "
                                 f"({cfg.user}@{cfg.host}:{cfg.port}/{cfg.database}): {detail}") from None
        try:
            conn.read_only = True
            set_json_loads(_json_loads, conn)
            with conn.transaction():
                conn.execute(sql.SQL("select set_config('search_path', {}, false)").format(sql.Literal(search_path)))
                if cfg.role:
                    conn.execute(sql.SQL("set role {}").format(sql.Identifier(cfg.role)))
        except psycopg.Error as exc:
            conn.close()
            raise WarehouseError(f"cannot prepare the PostgreSQL warehouse of target {cfg.target!r}: "
                                 f"{first_line(str(exc))}") from None
        return conn

    def cursor(self) -> PostgresCursor:
        """A cursor on a pooled connection, or a new one."""
        with self._guard:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            return PostgresCursor(self, conn, reused=True)
        try:
            return PostgresCursor(self, self.connect(), reused=False)
        except WarehouseError as exc:
            raise CallError("execution", str(exc)) from None

    def casts_for(self, sql: str, types: Mapping[str, TypeDef | None] | None) -> tuple[tuple[str, str], ...]:
        """The casts `sql` was found to need (none until it fails without them)."""
        return self._casts.get(sql, ()) if types is not None else ()

    def remember_casts(self, sql: str, types: Mapping[str, TypeDef | None]) -> tuple[tuple[str, str], ...]:
        """Cast every parameter of `sql` to its declared type from now on."""
        casts = tuple(sorted((name, pg_type(t)) for name, t in types.items()))
        self._casts[sql] = casts
        return casts

    def set_timeout(self, conn: Any, seconds: float) -> None:
        """Set the connection's statement_timeout, unless it already has this value."""
        with self._guard:
            current = self._timeouts.get(conn)
        if current != seconds:
            conn.execute("select set_config('statement_timeout', $1, false)", [f"{max(1, round(seconds * 1000))}ms"])
            conn.commit()
            with self._guard:
                self._timeouts[conn] = seconds

    def give_back(self, conn: Any) -> None:
        """Roll the call's transaction back and keep the connection for the next call, if it is sound."""
        import psycopg

        try:
            if not conn.closed:
                conn.rollback()
        except psycopg.Error:
            pass
        with self._guard:
            if not conn.closed and not conn.broken and len(self._idle) < _IDLE_KEPT:
                self._idle.append(conn)
                return
        conn.close()

    def columns(self) -> dict[tuple[str, str, str], dict[str, str]]:
        """Every relation outside the system schemas, with its columns' types (arrays as ``int4[]``)."""
        cursor = self.cursor()
        try:
            cursor.execute(
                "select table_catalog, table_schema, table_name, column_name, "
                "case data_type when 'ARRAY' then substr(udt_name, 2) || '[]' "
                "when 'USER-DEFINED' then udt_name else data_type end "
                "from information_schema.columns "
                "where table_schema not in ('pg_catalog', 'information_schema') "
                "order by table_schema, table_name, ordinal_position", {})
            return group_columns(cursor.fetchmany(1_000_000))
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the pooled connections; calls still running keep theirs until they finish."""
        with self._guard:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _bind(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    # An object argument is a JSON document to PostgreSQL; lists bind as arrays.
    return Jsonb(value) if isinstance(value, dict) else value


def _type_name(oid: int) -> str:
    """The type's name as the engine and `validate` expect it: ``int4``, ``numeric``, ``text[]``, ``JSON``."""
    import psycopg

    info = psycopg.adapters.types.get(oid)
    if info is None:
        return "unknown"
    name = "JSON" if info.name in ("json", "jsonb") else info.name
    return f"{name}[]" if oid != info.oid else name

