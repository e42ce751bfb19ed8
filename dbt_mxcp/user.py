"""Who the caller is: the `user` that policies and claim-bound parameters see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STANDARD_FIELDS = ("id", "email", "name", "role", "groups", "scopes", "claims")


def make_user(raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A complete `user`: standard fields always present, unknown top-level keys moved into `claims`.

    Without authentication the caller is anonymous: role ``"anonymous"``, no groups, no scopes.
    """
    raw = dict(raw or {})
    claims = raw.pop("claims", None)
    claims = dict(claims) if isinstance(claims, Mapping) else {}  # a hand-written user may hold anything
    user: dict[str, Any] = {
        "id": raw.pop("id", None),
        "email": raw.pop("email", None),
        "name": raw.pop("name", None),
        "role": raw.pop("role", None) or "anonymous",
        "groups": _listed(raw.pop("groups", None)),
        "scopes": _listed(raw.pop("scopes", None)),
    }
    user["claims"] = {**raw, **claims}  # explicit claims win over stray top-level keys
    return user


def _listed(value: Any) -> list[Any]:
    """A list field: a list as given; a single value is one item (``groups: hr``, as a token's scalar claim)."""
    if not value:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class MissingClaim(LookupError):
    """A claim-bound parameter whose claim the caller does not have."""


def claim_value(user: Mapping[str, Any], path: str) -> Any:
    """The value at `path` (``user.email``, ``user.claims.tenant``) of the caller; MissingClaim if absent."""
    value: Any = user
    for part in path.split(".")[1:]:
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise MissingClaim(path)
        value = value[part]
    return value
