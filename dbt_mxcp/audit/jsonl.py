"""The JSONL audit sink: append-only, hash-chained, rotated by size, mode 0600.

Each line is one JSON record with ``prev_hash`` (the previous record's ``hash``) and ``hash``
(SHA-256 of the record's canonical JSON without ``hash``). Editing, removing or reordering any
record breaks the chain, which `verify` finds. A record is one `write()` of one line; `fsync`
decides when the kernel is told to put it on disk:

- ``every``: after each record. Nothing acknowledged is lost, even on power loss.
- ``interval``: at most `interval` seconds after a record. A process crash loses nothing (the
  record is in the kernel); a machine crash can lose the last `interval` seconds.
- ``os``: never explicitly; the kernel writes back on its own schedule (typically within 30 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = ""


class AuditWriteError(Exception):
    """A record could not be written."""


def canonical(record: dict[str, Any]) -> str:
    """The text a record's hash covers: sorted keys, no spaces, without `hash` itself."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(record: dict[str, Any]) -> str:
    """The hash of a record whose `prev_hash` is set."""
    return hashlib.sha256(canonical(record).encode("utf-8")).hexdigest()


def link(record: dict[str, Any], prev_hash: str) -> tuple[dict[str, Any], str]:
    """`record` chained after `prev_hash` (with its `hash`), and the exact JSON line its sink stores."""
    chained = {**record, "prev_hash": prev_hash}
    try:
        chained["hash"] = chain_hash(chained)
    except UnicodeEncodeError:
        # A lone surrogate (bytes that were not UTF-8, e.g. in a CLI argument or a token's claim):
        # kept as its backslash escape, so the record can still be written. Only this rare record
        # pays for the walk.
        chained = _encodable(chained)
        chained["hash"] = chain_hash(chained)
    return chained, json.dumps(chained, ensure_ascii=False, separators=(",", ":"))


def _encodable(value: Any) -> Any:
    """`value` with every string UTF-8 can write (a lone surrogate as its backslash escape)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return value


def log_files(path: Path) -> list[Path]:
    """The audit file and its rotated predecessors, oldest first."""
    rotated = sorted((p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
                     key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, path] if path.exists() else rotated


def iter_lines(path: Path) -> Iterator[tuple[Path, int, str]]:
    """(file, line number, text) for every line of the audit log, oldest first."""
    for file in log_files(path):
        with file.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield file, number, line.rstrip("\n")


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every readable record of the file and its rotations, oldest first (torn lines skipped)."""
    return records_of(iter_lines(path))


def records_of(lines: Iterable[tuple[Any, int, str]]) -> Iterator[dict[str, Any]]:
    """The records among (source, number, line) triples; lines that are not JSON are skipped."""
    for _, _, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


@dataclass
class Verification:
    """What `verify` found."""

    records: int = 0
    torn: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


def verify(path: Path) -> Verification:
    """Check the hash chain over the audit file and its rotations."""
    return verify_lines(iter_lines(path))


def verify_lines(lines: Iterable[tuple[Any, int, str]]) -> Verification:
    """Check the hash chain over (source, number, line) triples, oldest first.

    A line that is not JSON (a write torn by a crash) is reported but does not break the chain;
    a record whose hash or link is wrong does.
    """
    result = Verification()
    previous = None
    for source, number, line in lines:
        where = f"{getattr(source, 'name', source)}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            result.torn.append(where)
            continue
        result.records += 1
        if not isinstance(record, dict) or "hash" not in record or "prev_hash" not in record:
            result.broken.append(f"{where}: not an audit record")
            continue
        if record["hash"] != chain_hash(record):
            result.broken.append(f"{where}: its content does not match its hash (edited)")
        if previous is not None and record["prev_hash"] != previous:
            result.broken.append(f"{where}: does not follow the previous record (removed or reordered records)")
        previous = record["hash"]
    return result


def _last_hash(path: Path) -> str:
    last = GENESIS
    for record in iter_records(path):
        if isinstance(record.get("hash"), str):
            last = record["hash"]
    return last


class JsonlSink:
    """Appends hash-chained records to a JSONL file (see the module docstring for `fsync`)."""

    def __init__(self, path: Path, *, fsync: str = "interval", interval: float = 1.0,
                 max_bytes: int = 100_000_000, backups: int = 10) -> None:
        self.path = path
        self.fsync = fsync
        self.interval = interval
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._prev = GENESIS
        self._dirty = False
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._prev = _last_hash(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self._size = os.fstat(fd).st_size
        if self._size and not self._ends_with_newline():
            os.write(fd, b"\n")  # a torn last line from a crash stays on a line of its own
            self._size += 1
        self._fd = fd
        if self.fsync == "interval" and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="dbt-mxcp-audit-fsync", daemon=True)
            self._syncer.start()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def lines(self) -> Iterator[tuple[Path, int, str]]:
        """(file, line number, text) of every line written so far, oldest first."""
        return iter_lines(self.path)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` (chained to the previous one); the record as written. AuditWriteError on failure."""
        with self._lock:
            try:
                if self._fd is not None and not self._still_at_path():
                    self._reset()  # moved, deleted or replaced: a record written there would be lost to `log`
                if self._fd is None:
                    self._open()
                chained, text = link(record, self._prev)
                line = (text + "\n").encode("utf-8")
                if self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()
                assert self._fd is not None
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                self._size += written
                if self.fsync == "every":
                    os.fsync(self._fd)
                else:
                    self._dirty = True
            except OSError as exc:
                self._reset()
                raise AuditWriteError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from None
            self._prev = chained["hash"]
            return chained

    def _still_at_path(self) -> bool:
        """Whether the file we hold open is still the one at `path` (one stat() a record)."""
        assert self._fd is not None
        try:
            at_path = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(self._fd)
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        prev = self._prev
        self._open()
        self._prev = prev  # the chain continues across files

    def _reset(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """fsync what was written (a no-op when nothing was)."""
        with self._lock:
            if self._dirty and self._fd is not None:
                with contextlib.suppress(OSError):  # the next write reports a failing disk
                    os.fsync(self._fd)
                    self._dirty = False

    def close(self) -> None:
        """fsync and close; nothing acknowledged is left behind."""
        self._stop.set()
        self.flush()
        with self._lock:
            self._reset()
