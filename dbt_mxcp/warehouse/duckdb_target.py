"""The serving connection to the dbt-duckdb warehouse: read-only, no file or network access, locked config.

The file is opened read-only, so no statement can change dbt's relations; its catalog name (the
file's stem) is the manifest's database, so relation names such as ``"shop"."main"."customers"``
resolve as dbt wrote them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import WarehouseError
from ..project import DuckDbConfig
from ..sql import quote_identifier
from ..types import TypeDef
from . import group_columns


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDbCursor:
    """A DuckDB cursor (its own connection to the instance) behind the engine's `Cursor` interface."""

    def __init__(self, cursor: Any) -> None:
        import duckdb

        self.errors: tuple[type[BaseException], ...] = (duckdb.Error,)
        self._cursor = cursor

    def execute(self, sql: str, params: Mapping[str, Any], timeout: float | None = None,
                types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """Run `sql`, DuckDB binding the ``$name`` parameters and typing them from their values.

        In-process, so the engine's deadline is the timeout.
        """
        self._cursor.execute(sql, dict(params))
        return [(d[0], str(d[1])) for d in self._cursor.description or []]

    def fetchmany(self, size: int) -> Sequence[Sequence[Any]]:
        """Up to `size` more rows."""
        rows: Sequence[Sequence[Any]] = self._cursor.fetchmany(size)
        return rows

    def describe(self, sql: str, params: Mapping[str, Any],
                 types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """The query's columns, bound but not run (a lazy relation: about a third faster than DESCRIBE)."""
        relation = self._cursor.sql(sql, params=dict(params))
        return [(str(name), str(kind)) for name, kind in zip(relation.columns, relation.types, strict=True)]

    def interrupt(self) -> None:
        """Interrupt the running statement."""
        self._cursor.interrupt()

    def interrupted(self, exc: BaseException) -> bool:
        """DuckDB raises InterruptException for an interrupted statement."""
        import duckdb

        return isinstance(exc, duckdb.InterruptException)

    def close(self) -> None:
        """Close this cursor's connection."""
        self._cursor.close()


class DuckDbWarehouse:
    """One hardened DuckDB instance; each call takes its own cursor from it."""

    def __init__(self, config: DuckDbConfig, *, lock_wait: float = 10.0) -> None:
        self.config = config
        self._lock_wait = lock_wait
        self._conn: Any = None
        self._guard = threading.Lock()
        # Each cursor is a new DuckDB connection with its own default schema.
        self._use = f"USE {quote_identifier(config.database)}.{quote_identifier(config.schema)}" \
            if config.schema != "main" else None

    def connection(self) -> Any:
        """The shared connection, opened on first use."""
        with self._guard:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def open(self) -> None:
        """Open the file now, so a missing or locked file fails here."""
        self.connection()

    def cursor(self) -> DuckDbCursor:
        """A new cursor (its own DuckDB connection to the same instance), safe to use in one thread."""
        cursor = self.connection().cursor()
        if self._use:
            cursor.execute(self._use)
        return DuckDbCursor(cursor)

    def columns(self) -> dict[tuple[str, str, str], dict[str, str]]:
        """Every relation of the file (and attached ones) with its columns' DuckDB types."""
        cursor = self.connection().cursor()
        try:
            rows = cursor.execute("select table_catalog, table_schema, table_name, column_name, data_type "
                                  "from information_schema.columns order by ordinal_position").fetchall()
        finally:
            cursor.close()
        return group_columns(rows)

    def close(self) -> None:
        """Close the instance; later calls reopen it."""
        with self._guard:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self) -> Any:
        import duckdb

        cfg = self.config
        if cfg.path == ":memory:":
            raise WarehouseError(f"target {cfg.target!r} of profile {cfg.profile!r} uses an in-memory DuckDB "
                                 "(path :memory:), which keeps nothing to serve: set a file path in profiles.yml")
        if cfg.path.startswith(("md:", "motherduck:")):
            raise WarehouseError("MotherDuck targets are not supported yet: use a local DuckDB file")
        if not Path(cfg.path).is_file():
            raise WarehouseError(f"warehouse file {cfg.path} does not exist: run `dbt build` first")
        if Path(cfg.path).stem != cfg.database:
            # DuckDB names the catalog after the file; the manifest's relation names use `database`.
            raise WarehouseError(f"warehouse file {cfg.path} opens as catalog {Path(cfg.path).stem!r}, but the "
                                 f"profile's database is {cfg.database!r}: make them match")
        config: dict[str, str | bool | int | float | list[str]] = {
            "autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
        if not cfg.attach:
            config["enable_external_access"] = "false"
        conn = self._connect(cfg.path, config)
        if conn.execute("select current_setting('lock_configuration')").fetchone()[0]:
            # DuckDB shares one instance per file within a process: another Warehouse of this
            # process opened and hardened it already.
            return conn
        try:
            for extra in cfg.attach:
                alias = extra.get("alias") or Path(str(extra.get("path", ""))).stem
                conn.execute(f"ATTACH {_literal(str(extra.get('path')))} AS {quote_identifier(str(alias))} "
                             "(READ_ONLY)")
            for key, value in cfg.settings.items():
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
                    raise WarehouseError(f"profile setting {key!r} is not a DuckDB setting name")
                try:
                    conn.execute(f"SET {key} = {_literal(str(value))}")
                except duckdb.Error as exc:
                    # Settings can hold secrets: name the setting, never echo its value.
                    detail = str(exc).splitlines()[0].replace(str(value), "[value]")
                    raise WarehouseError(f"cannot apply the profile's DuckDB setting {key!r}: {detail}") from None
            # Harden last: no file or network access from SQL, and nothing can switch it back on.
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            conn.close()
            raise WarehouseError(f"cannot prepare warehouse {cfg.path}: {exc}") from None
        return conn

    def _connect(self, path: str, config: dict[str, str | bool | int | float | list[str]]) -> Any:
        """Open `path` read-only, waiting up to lock_wait for a dbt process that holds the write lock."""
        import duckdb

        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                return duckdb.connect(path, read_only=True, config=config)
            except duckdb.IOException as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    raise WarehouseError(f"cannot open warehouse {path}: {text}") from None
                if time.monotonic() >= deadline:
                    holder = re.search(r"held in (.+?) \(PID (\d+)\)", text)
                    who = f" by {holder.group(1)} (PID {holder.group(2)})" if holder else ""
                    raise WarehouseError(f"warehouse {path} is locked{who}, probably a running `dbt run` or "
                                         "`dbt build`; try again when it has finished") from None
                time.sleep(0.2)
            except duckdb.Error as exc:
                raise WarehouseError(f"cannot open warehouse {path}: {exc}") from None
