"""dbt_mxcp.user: the `user` policies and claim-bound parameters see."""

from __future__ import annotations

import copy

import pytest

from dbt_mxcp.user import MissingClaim, claim_value, make_user


def test_anonymous_defaults() -> None:
    assert make_user() == {"id": None, "email": None, "name": None, "role": "anonymous",
                           "groups": [], "scopes": [], "claims": {}}
    assert make_user({}) == make_user(None)


def test_given_fields_kept() -> None:
    user = make_user({"id": "u1", "email": "a@b.co", "name": "Ann", "role": "admin",
                      "groups": ["support", "crm"], "scopes": ["read"], "claims": {"tenant": "acme"}})
    assert user == {"id": "u1", "email": "a@b.co", "name": "Ann", "role": "admin",
                    "groups": ["support", "crm"], "scopes": ["read"], "claims": {"tenant": "acme"}}


def test_partial_user_gets_the_other_defaults() -> None:
    user = make_user({"groups": ["support"]})
    assert user["role"] == "anonymous"
    assert user["groups"] == ["support"]
    assert user["scopes"] == []
    assert user["claims"] == {}
    assert user["email"] is None


def test_null_lists_and_role_become_defaults() -> None:
    user = make_user({"role": None, "groups": None, "scopes": None, "claims": None})
    assert user["role"] == "anonymous"
    assert user["groups"] == []
    assert user["scopes"] == []
    assert user["claims"] == {}


def test_unknown_top_level_keys_move_into_claims() -> None:
    user = make_user({"email": "a@b.co", "tenant": "acme", "org": {"id": 7}, "claims": {"sub": "123"}})
    assert user["claims"] == {"sub": "123", "tenant": "acme", "org": {"id": 7}}
    assert set(user) == {"id", "email", "name", "role", "groups", "scopes", "claims"}


def test_groups_given_as_a_tuple_become_a_list() -> None:
    assert make_user({"groups": ("a", "b")})["groups"] == ["a", "b"]


def test_raw_input_not_mutated() -> None:
    raw = {"email": "a@b.co", "tenant": "acme", "claims": {"sub": "1"}, "groups": ["g"]}
    before = copy.deepcopy(raw)
    user = make_user(raw)
    user["claims"]["extra"] = 1
    user["groups"].append("h")
    assert raw == before


def test_two_anonymous_users_do_not_share_lists() -> None:
    a, b = make_user(), make_user()
    a["groups"].append("x")
    a["claims"]["k"] = 1
    assert b["groups"] == []
    assert b["claims"] == {}


# ---- claim_value -------------------------------------------------------------------------------

USER = make_user({"id": "u1", "email": "a@b.co", "tenant": "acme", "org": {"id": 7, "name": "Acme"},
                  "active": False, "quota": 0})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("user.email", "a@b.co"),
        ("user.id", "u1"),
        ("user.role", "anonymous"),
        ("user.claims.tenant", "acme"),
        ("user.claims.org.id", 7),
        ("user.claims.org.name", "Acme"),
        ("user.claims.active", False),
        ("user.claims.quota", 0),
    ],
)
def test_claim_value_reads_the_path(path: str, value: object) -> None:
    assert claim_value(USER, path) == value


@pytest.mark.parametrize("path", ["user.name", "user.claims.missing", "user.claims.org.missing",
                                  "user.claims.tenant.sub", "user.nope"])
def test_absent_or_null_claim_is_missing(path: str) -> None:
    with pytest.raises(MissingClaim) as info:
        claim_value(USER, path)
    assert path in str(info.value)


def test_missing_claim_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        claim_value(make_user(), "user.email")
