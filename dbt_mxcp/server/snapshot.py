"""Warehouse snapshots: a copy of dbt's DuckDB file, taken only while no dbt process holds it.

DuckDB allows one writer or many readers, and a lock attempt fails at once. A server that opened
dbt's file would make the next `dbt run` fail. Instead the server serves a copy: it checks that no
process holds a lock on the file (without taking one, so it can never block dbt), copies it, checks
again that it did not change meanwhile, and opens the copy. Each copy has its own folder, named
by content version, and keeps the file's base name so DuckDB's catalog name stays the manifest's
database.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_DIR = "mxcp_snapshots"


class Busy(Exception):
    """The warehouse is being written right now (a dbt command holds it); try again later."""


@dataclass(frozen=True)
class Version:
    """What identifies one state of the warehouse file: size and modification time, ns."""

    size: int
    mtime_ns: int

    @property
    def tag(self) -> str:
        return f"{self.mtime_ns:x}-{self.size:x}"


def version_of(path: Path) -> Version:
    """The file's current version (raises FileNotFoundError)."""
    st = path.stat()
    return Version(st.st_size, st.st_mtime_ns)


def locked_by_other(path: Path) -> bool:
    """Whether another process holds a write lock on `path`, as a writing dbt does (F_GETLK: asks, never
    takes one). Other readers do not count: they change nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (Linux layout).
        query = struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)  # conflicts with write locks only
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query + b"\0" * 4)
        return bool(struct.unpack("hhqqi", answer[:struct.calcsize("hhqqi")])[0] != fcntl.F_UNLCK)
    finally:
        os.close(fd)


def publish(source: Path, root: Path) -> tuple[Path, Version]:
    """Copy `source` (and its WAL, if any) into a versioned folder under `root`; the copy's path.

    Raises Busy when a dbt process holds the file or it changed during the copy.
    """
    if locked_by_other(source):
        raise Busy(f"{source} is held by another process")
    version = version_of(source)
    target_dir = root / version.tag
    target = target_dir / source.name
    if target.is_file():
        return target, version
    staging = root / f".{version.tag}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(source, staging / source.name)
        wal = source.with_name(source.name + ".wal")
        if wal.is_file():
            shutil.copyfile(wal, staging / wal.name)
        if locked_by_other(source) or version_of(source) != version:
            raise Busy(f"{source} changed while it was being copied")
        os.replace(staging, target_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, version


def prune(root: Path, keep: set[Path]) -> None:
    """Delete snapshot folders under `root` except those holding the paths in `keep`."""
    if not root.is_dir():
        return
    kept = {p.parent.resolve() for p in keep}
    for child in root.iterdir():
        if child.is_dir() and child.resolve() not in kept and not child.name.startswith("."):
            shutil.rmtree(child, ignore_errors=True)
