"""The login server's memory: registered clients, pending logins, codes and tokens, in one SQLite file.

Codes, tokens and login handles are stored only as their SHA-256, so a copy of the file lets
nobody call the server. Nothing from the identity provider is kept but the mapped `user`: its
tokens are used once, at login, and dropped. The file is created 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_SCHEMA = """
create table if not exists clients (client_id text primary key, info text not null, created real not null);
create table if not exists grants (
    digest text primary key,
    kind text not null,            -- pending | code | access | refresh
    data text not null,
    expires real not null
);
create index if not exists grants_expiry on grants (expires);
"""


def digest(handle: str) -> str:
    """How a code, token or login handle is stored: its hex SHA-256."""
    return hashlib.sha256(handle.encode("utf-8")).hexdigest()


def new_handle(prefix: str = "") -> str:
    """A fresh random handle (256 bits), e.g. a code or a token."""
    return prefix + secrets.token_urlsafe(32)


class LoginStore:
    """Thread-safe access to the SQLite file; every write is committed before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("pragma journal_mode=wal")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the login store {path}: {exc}; make the folder writable or set "
                              "auth.login.store in mxcp.yml") from None
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def add_client(self, client_id: str, info: dict[str, Any]) -> None:
        """Remember a registered client."""
        with self._lock:
            self._db.execute("insert or replace into clients values (?, ?, ?)", (client_id, json.dumps(info),
                                                                                 time.time()))

    def client(self, client_id: str) -> dict[str, Any] | None:
        """A registered client's information, or None."""
        with self._lock:
            row = self._db.execute("select info from clients where client_id = ?", (client_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, handle: str, data: dict[str, Any], ttl: float) -> None:
        """Keep `data` under `handle` (stored hashed) for `ttl` seconds."""
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:  # expired grants are swept now and then, not on every write
                self._db.execute("delete from grants where expires < ?", (now,))
                self._next_sweep = now + 60
            self._db.execute("insert or replace into grants values (?, ?, ?, ?)",
                             (digest(handle), kind, json.dumps(data), now + ttl))

    def get(self, kind: str, handle: str) -> dict[str, Any] | None:
        """The live data under `handle`, or None when unknown, expired or of another kind."""
        return self._live("select data, expires from grants where digest = ? and kind = ?", kind, handle)

    def take(self, kind: str, handle: str) -> dict[str, Any] | None:
        """Like `get`, and delete it: a code or a login handle is good once."""
        return self._live("delete from grants where digest = ? and kind = ? returning data, expires", kind, handle)

    def _live(self, sql: str, kind: str, handle: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(sql, (digest(handle), kind)).fetchone()
        if row is None or row[1] < time.time():
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data

    def drop(self, handle: str) -> None:
        """Forget `handle`, whatever it is."""
        self.drop_digest(digest(handle))

    def drop_digest(self, key: str) -> None:
        """Forget what is stored under the digest `key` (a token's partner is known by its digest)."""
        with self._lock:
            self._db.execute("delete from grants where digest = ?", (key,))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
