"""The Postgres audit sink: one table that several server replicas share, with one hash chain.

Each record is inserted in its own transaction that first takes a transaction-level advisory
lock, reads the last record's hash and links to it, so replicas writing at once still form one
chain. The exact JSON line is stored (`line`), so `verify` recomputes hashes over what was written.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from .jsonl import GENESIS, AuditWriteError, link

_LOCK_KEY = 7_361_204_885  # the advisory lock that serialises writers of the chain
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def check_table(table: str) -> str:
    """`table`, if it is a plain (schema.)table name that is safe to put in SQL; ConfigError otherwise."""
    if not _TABLE.match(table):
        raise ConfigError(f"audit.table {table!r} must be a plain (schema.)table name")
    return table


class PostgresSink:
    """Appends hash-chained records to a Postgres table (created if missing)."""

    def __init__(self, dsn: str, table: str = "mxcp_audit") -> None:
        self.dsn = dsn
        self.table = check_table(table)
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("audit.sink postgres needs psycopg: pip install 'dbt-mxcp[postgres]'") from None

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, connect_timeout=10)
            with self._conn.transaction():
                # Replicas starting together would race on CREATE TABLE IF NOT EXISTS: serialise it too.
                self._conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                self._conn.execute(f"create table if not exists {self.table} (id bigserial primary key, "
                                   "time timestamptz not null, hash text not null, line text not null)")
        return self._conn

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Insert `record` linked to the table's last record; AuditWriteError on failure."""
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    last = conn.execute(f"select hash from {self.table} order by id desc limit 1").fetchone()
                    chained, line = link(record, last[0] if last else GENESIS)
                    conn.execute(f"insert into {self.table} (time, hash, line) values (%s, %s, %s)",
                                 (chained["time"], chained["hash"], line))
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                # The DSN may hold a password: say what failed, never how we connected.
                raise AuditWriteError(f"cannot write the audit table {self.table}: "
                                      f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                      .replace(self.dsn, "[dsn]")) from None
            return chained

    def lines(self) -> Iterator[tuple[str, int, str]]:
        """(table, id, line) of every record, in insertion order."""
        import psycopg

        try:
            rows = self._connection().execute(f"select id, line from {self.table} order by id").fetchall()
        except psycopg.Error as exc:
            raise ConfigError(f"cannot read the audit table {self.table}: {type(exc).__name__}") from None
        for row_id, line in rows:
            yield self.table, int(row_id), str(line)

    def flush(self) -> None:
        """Every record is committed before the call is answered: nothing to flush."""

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
