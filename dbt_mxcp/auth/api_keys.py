"""API keys: only their SHA-256 is stored; a presented key is hashed and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

from ..user import make_user


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as `mxcp.yml` stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "mxcp_" + secrets.token_urlsafe(32)


class ApiKeys:
    """The configured keys; `user_for` returns the caller a presented key stands for, or None."""

    def __init__(self, keys: Sequence[Any]) -> None:
        self._keys = [(k.sha256, k.user, k.name) for k in keys]

    def user_for(self, presented: str) -> dict[str, Any] | None:
        digest = hash_key(presented)
        found = None
        for stored, user, name in self._keys:
            # Compare against every key, so the time taken says nothing about which one matched.
            if hmac.compare_digest(digest, stored):
                found = (user, name)
        if found is None:
            return None
        user, name = found
        return make_user({"id": name, **user})
