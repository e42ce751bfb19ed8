"""The DuckDB audit sink: hash-chained records in a table of a DuckDB file that one process writes.

DuckDB lets one process open a file read-write, or many open it read-only, and a refused lock
fails at once. So:

- The writer (the server, or `dbt-mxcp run`) holds the file open while it runs. Another process
  that tries to write it is refused with `AuditFileBusy`, which names the file and the way out
  (the Postgres sink for several replicas).
- Readers (`dbt-mxcp log`, `--verify`) never open the live file: they copy it and its WAL into a
  private temporary folder and open the copy read-only; DuckDB replays the WAL, dropping a torn
  tail left by a crash.
- A lock file beside it, `<file>.lock`, keeps those copies whole: a write holds it exclusively
  for its commit (and any checkpoint DuckDB runs then), a copy holds it shared. A write waits up
  to `LOCK_WAIT` seconds for copies to finish, then fails.

Each record is its own transaction: DuckDB writes and fdatasyncs the WAL before `write` returns.
The exact JSON line is stored (`line`), so `verify` recomputes hashes over what was written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from ..errors import ConfigError
from .jsonl import GENESIS, AuditWriteError, link
from .postgres import check_table

LOCK_WAIT = 10.0  # seconds a write waits for readers' copies before it fails
_BATCH = 1000  # rows fetched at a time by a reader
# The sinks writing a file in this process, by resolved path. DuckDB shares one database per file
# within a process, so a second sink would get in, with a chain head of its own; and reading the
# file in the writer's process would drop DuckDB's lock (POSIX locks go with any closed descriptor).
_writers: dict[Path, DuckDbSink] = {}
_writers_lock = threading.Lock()


class AuditFileBusy(AuditWriteError):
    """Another process writes the DuckDB audit file."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flocked(fd: int, operation: int, what: str, wait: float | None = LOCK_WAIT) -> Iterator[None]:
    """Hold flock `operation` on `fd`, waiting at most `wait` seconds (None: as long as it takes)."""
    if wait is None:
        fcntl.flock(fd, operation)  # woken by the kernel as soon as it is free: a busy writer cannot starve us
    else:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AuditWriteError(f"{what}: its lock was held for more than {wait:g} s") from None
                time.sleep(0.002)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _busy(path: Path, detail: str) -> AuditFileBusy:
    pid = re.search(r"PID (\d+)", detail)
    who = f"process {pid.group(1)}" if pid else "another process"
    # DuckDB's lock says who holds the file, not whether to read or to write (dbt reading it
    # through the package's audit_log() holds it too).
    return AuditFileBusy(f"the audit file {path} is open in {who}: a DuckDB audit file takes one process "
                         "at a time. Stop that process (or let a dbt run reading it finish), or run several "
                         "server replicas with `audit.sink: postgres`")


def _failure(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, OSError):
        return exc.strerror or text
    return f"{type(exc).__name__}: {text}"


class DuckDbSink:
    """Appends hash-chained records to a table of a DuckDB file (created if missing, mode 0600)."""

    def __init__(self, path: Path, table: str = "mxcp_audit") -> None:
        self.path = path
        self.table = check_table(table)
        self._wal = path.with_name(path.name + ".wal")
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock = threading.Lock()
        self._conn: Any = None
        self._lock_fd: int | None = None
        self._last_id = 0
        self._prev = GENESIS

    # -- writing -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file for writing now; AuditFileBusy if another process writes it, AuditWriteError otherwise."""
        with self._lock:
            if self._conn is None:
                self._open()

    def _open(self) -> None:
        key = self.path.resolve()
        with _writers_lock:
            if key in _writers:
                raise _busy(self.path, f"PID {os.getpid()}")
            _writers[key] = self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._exclusive():
                if not self.path.exists():
                    self._create()
                try:
                    self._conn = duckdb.connect(str(self.path))
                except duckdb.IOException as exc:
                    if "lock" in str(exc).lower():
                        raise _busy(self.path, str(exc)) from None
                    raise
                self._private_wal()
                self._conn.execute(self._ddl())  # a no-op on our own file; adds the table to another DuckDB file
                last = self._conn.execute(f"select id, hash from {self.table} order by id desc limit 1").fetchone()
            self._last_id, self._prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
        except AuditWriteError:
            self._reset()
            raise
        except (OSError, duckdb.Error) as exc:
            self._reset()
            raise AuditWriteError(f"cannot write the audit file {self.path}: {_failure(exc)}") from None

    def _ddl(self) -> str:
        schema = f"create schema if not exists {self.table.split('.')[0]}; " if "." in self.table else ""
        return (f"{schema}create table if not exists {self.table} (id bigint primary key, "
                "time timestamptz not null, hash text not null, line text not null)")

    def _create(self) -> None:
        # DuckDB creates files 0644 under the usual umask: build the file (with its table) in a
        # private folder beside it, make it 0600, then link it into place: others never see it open.
        with tempfile.TemporaryDirectory(dir=self.path.parent, prefix=f".{self.path.name}.") as tmp:
            staged = Path(tmp) / self.path.name
            con = duckdb.connect(str(staged))
            try:
                con.execute(self._ddl())
            finally:
                con.close()
            os.chmod(staged, 0o600)
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(staged, self.path)
        _fsync_dir(self.path.parent)

    def _private_wal(self) -> None:
        # DuckDB deletes the WAL at each checkpoint and would create the next one 0644; it appends
        # to one that exists, so create it first, 0600, and make its directory entry durable
        # (DuckDB fdatasyncs the WAL's content, not the folder).
        try:
            fd = os.open(self._wal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(self._wal, 0o600)
            return
        os.close(fd)
        _fsync_dir(self.path.parent)

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        assert self._lock_fd is not None
        return _flocked(self._lock_fd, fcntl.LOCK_EX, f"cannot write the audit file {self.path}")

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Insert `record` linked to the last one, committed before it returns; AuditWriteError on failure."""
        with self._lock:
            if self._conn is None:
                self._open()
            chained, line = link(record, self._prev)
            try:
                with self._exclusive():
                    if not self._wal.exists():
                        self._private_wal()
                    self._conn.execute(f"insert into {self.table} (id, time, hash, line) values (?, ?, ?, ?)",
                                       [self._last_id + 1, chained["time"], chained["hash"], line])
            except AuditWriteError:
                self._reset()
                raise
            except (OSError, duckdb.Error) as exc:
                self._reset()  # the next write reopens the file and reads the chain's head again
                raise AuditWriteError(f"cannot write the audit file {self.path}: {_failure(exc)}") from None
            self._last_id += 1
            self._prev = chained["hash"]
            return chained

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(duckdb.Error):
                self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with _writers_lock:
            if _writers.get(self.path.resolve()) is self:
                del _writers[self.path.resolve()]

    def flush(self) -> None:
        """Every record is committed (the WAL fdatasync'ed) before the call is answered: nothing to flush."""

    def close(self) -> None:
        """Checkpoint and close the file."""
        with self._lock:
            if self._conn is not None and self._lock_fd is not None:
                # Closing checkpoints: hold the lock file so no reader copies a half-written checkpoint.
                with contextlib.suppress(AuditWriteError), self._exclusive():
                    with contextlib.suppress(duckdb.Error):
                        self._conn.close()
                    self._conn = None
            self._reset()

    # -- reading -----------------------------------------------------------------------------------

    def lines(self) -> Iterator[tuple[str, int, str]]:
        """(table, id, line) of every record in insertion order; readable while another process writes."""
        with _writers_lock:
            writer = _writers.get(self.path.resolve())
        if writer is not None:
            yield from writer._own_lines()
            return
        if not self.path.exists():
            return
        with tempfile.TemporaryDirectory(prefix="dbt-mxcp-audit-") as tmp:
            copy = Path(tmp) / self.path.name
            try:
                self._snapshot(copy)
                con = duckdb.connect(str(copy), read_only=True)
            except (OSError, duckdb.Error, AuditWriteError) as exc:
                raise ConfigError(f"cannot read the audit file {self.path}: "
                                  f"{exc if isinstance(exc, AuditWriteError) else _failure(exc)}") from None
            try:
                yield from self._rows(con)
            finally:
                con.close()

    def _own_lines(self) -> Iterator[tuple[str, int, str]]:
        # In the writer's process: read through its connection (copying would drop DuckDB's lock).
        with self._lock:
            rows = list(self._rows(self._conn)) if self._conn is not None else []
        yield from rows

    def _rows(self, con: Any) -> Iterator[tuple[str, int, str]]:
        try:
            cursor = con.execute(f"select id, line from {self.table} order by id")
        except duckdb.Error as exc:
            raise ConfigError(f"cannot read the audit table {self.table} in {self.path}: {_failure(exc)}") from None
        while batch := cursor.fetchmany(_BATCH):
            for row_id, line in batch:
                yield self.table, int(row_id), str(line)

    def _snapshot(self, copy: Path) -> None:
        """Copy the file and its WAL to `copy`, between two writes (shared hold of the lock file)."""
        fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
        try:
            with _flocked(fd, fcntl.LOCK_SH, "cannot copy it", wait=None):  # a writer holds it for one commit
                shutil.copyfile(self.path, copy)
                with contextlib.suppress(FileNotFoundError):  # no WAL: everything is checkpointed
                    shutil.copyfile(self._wal, copy.with_name(copy.name + ".wal"))
        finally:
            os.close(fd)
