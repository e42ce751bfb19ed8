"""The writes database: where `access: write` endpoints insert, update and delete.

It is a DuckDB file the server owns (`writes.path` in mxcp.yml), never dbt's warehouse, which
stays read-only to the server. Each call runs in one transaction; calls are serialised, so a
publish never copies a half-done write. After writes, the file is checkpointed and copied to
`writes.publish_path` (atomically replaced), which dbt reads as a source through a read-only
`attach` in its profile: dbt never contends for the server's write lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .engine import Interrupter, Limits, QueryResult, run_query
from .errors import CallError, WarehouseError
from .warehouse.duckdb_target import DuckDbCursor

log = logging.getLogger("dbt_mxcp.server")


class WriteDatabase:
    """The server's read-write DuckDB file for write endpoints, and its published copy."""

    def __init__(self, path: Path, publish_path: Path, init_sql: str | None = None) -> None:
        self.path = path
        self.publish_path = publish_path
        self._init_sql = init_sql
        self._lock = threading.RLock()
        self._conn: Any = None
        self._dirty = False

    @classmethod
    def from_settings(cls, writes: Any, project_dir: Path) -> WriteDatabase:
        """The writes database `writes` (mxcp.yml) describes; relative paths are the project's."""
        return cls(project_dir / writes.path, project_dir / writes.publish_path, writes.init_sql)

    def _connection(self) -> Any:
        import duckdb

        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = duckdb.connect(str(self.path), config={"autoinstall_known_extensions": "false",
                                                              "autoload_known_extensions": "false"})
                if self._init_sql:
                    conn.execute(self._init_sql)
                conn.execute("SET enable_external_access = false")
                conn.execute("SET lock_configuration = true")
            except duckdb.Error as exc:
                raise WarehouseError(f"cannot open the writes database {self.path}: {exc}") from None
            self._conn = conn
            self._publish_now()  # dbt can read the tables as soon as they exist
        return self._conn

    def execute(self, sql: str, params: Mapping[str, Any], limits: Limits,
                interrupter: Interrupter | None = None) -> QueryResult:
        """Run one write in its own transaction (rolled back on any error)."""
        import duckdb

        with self._lock:
            cursor = self._connection().cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    result = run_query(DuckDbCursor(cursor), sql, params, limits, interrupter)
                    cursor.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):  # a failed statement may have aborted it already
                        cursor.execute("ROLLBACK")
                    raise
            finally:
                cursor.close()
            self._dirty = True
        return result

    def publish_if_changed(self) -> bool:
        """Copy the database to the publish path if a write happened since the last copy."""
        with self._lock:
            if not self._dirty or self._conn is None:
                return False
            self._publish_now()
            return True

    def _publish_now(self) -> None:
        with self._lock:
            self._conn.execute("CHECKPOINT")
            self.publish_path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.publish_path.with_name(f".{self.publish_path.name}.{os.getpid()}.tmp")
            shutil.copyfile(self.path, staging)
            os.replace(staging, self.publish_path)
            self._dirty = False

    def close(self) -> None:
        """Publish the last writes and close."""
        with self._lock:
            if self._conn is not None:
                if self._dirty:
                    self._publish_now()
                self._conn.close()
                self._conn = None


def affected_rows(result: QueryResult) -> int:
    """Rows a write changed: DuckDB's `Count` for plain DML, else the rows it returned."""
    if [name for name, _ in result.columns] == ["Count"] and len(result.rows) == 1:
        return int(result.rows[0]["Count"])
    return len(result.rows)


def publisher(writes: WriteDatabase, interval: float, stop: threading.Event) -> None:
    """Publish changed writes every `interval` seconds until `stop` is set."""
    while not stop.wait(interval):
        try:
            writes.publish_if_changed()
        except Exception as exc:  # keep serving; the next tick tries again
            log.warning("could not publish the writes database: %s", exc)


def writes_disabled() -> CallError:
    """The error for a write endpoint while writes are off."""
    return CallError("denied", "writes are disabled: set `writes: {enabled: true}` in mxcp.yml to serve "
                               "write endpoints")
