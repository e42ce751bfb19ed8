"""dbt_mxcp.user: the `user` policies and claim-bound parameters see."""

from __future__ import annotations

import copy

import pytest

from dbt_mxcp.auth.tokens import user_from_claims
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


class _Mapping:
    def __init__(self, claims: dict[str, str], role_map: dict[str, str] | None = None,
                 default_role: str | None = None) -> None:
        self.claims, self.role_map, self.default_role = claims, role_map or {}, default_role


def test_claims_by_exact_name_dotted_path_and_uri() -> None:
    claims = {"sub": 42, "realm_access": {"roles": ["viewer", "data-admin"]},
              "https://example.com/groups": ["eng"], "mail": "a@example.com"}
    mapping = _Mapping({"role": "realm_access.roles", "groups": "https://example.com/groups", "email": "mail"},
                       role_map={"data-admin": "admin", "viewer": "viewer"})
    user = user_from_claims(claims, mapping, ["read"])
    # The first role_map entry the claim holds wins, in role_map's order; ids become strings.
    assert (user["id"], user["role"], user["groups"], user["email"]) == ("42", "admin", ["eng"], "a@example.com")
    assert user["claims"]["realm_access"] == claims["realm_access"] and user["scopes"] == ["read"]


@pytest.mark.parametrize(("role_claim", "expected"), [
    ("analyst viewer", "reader"),  # a space-separated string
    (["nobody"], "guest"),  # no match: the default
    (None, "guest"),  # no claim: the default
])
def test_role_map_and_default(role_claim: object, expected: str) -> None:
    mapping = _Mapping({}, role_map={"viewer": "reader"}, default_role="guest")
    claims = {"sub": "u"} if role_claim is None else {"sub": "u", "role": role_claim}
    assert user_from_claims(claims, mapping, [])["role"] == expected


def test_without_role_map_the_claim_is_the_role() -> None:
    assert user_from_claims({"sub": "u", "role": "hr"}, _Mapping({}), [])["role"] == "hr"
    absent = user_from_claims({"sub": "u", "missing": {"x": 1}}, _Mapping({"role": "missing.y"}), [])
    assert absent["role"] == "anonymous"
