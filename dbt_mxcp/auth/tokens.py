"""OAuth 2.1 resource server: bearer JWTs validated against the issuer's JWKS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..user import make_user

STANDARD = ("id", "email", "name", "role", "groups", "scopes")


class TokenError(Exception):
    """A token that must be refused; `insufficient_scope` when it lacks a required scope (403)."""

    def __init__(self, message: str, *, insufficient_scope: bool = False) -> None:
        super().__init__(message)
        self.insufficient_scope = insufficient_scope


class JwtVerifier:
    """Checks a JWT's signature (keys from the JWKS URI, cached), algorithm, expiry, issuer, audience, scopes."""

    def __init__(self, settings: Any) -> None:
        import jwt

        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_uri, cache_keys=True, lifespan=300, timeout=10)

    def user_for(self, token: str) -> dict[str, Any]:
        """The caller the token stands for; TokenError when it must be refused."""
        import jwt

        cfg = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("the token is not a JWT") from None
        if header.get("alg") not in cfg.algorithms:  # alg "none" and unexpected algorithms never pass
            raise TokenError(f"token algorithm {header.get('alg')!r} is not accepted")
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=cfg.algorithms, audience=cfg.audience, issuer=cfg.issuer,
                                leeway=cfg.leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("the token was issued for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("the token was issued by another issuer") from None
        except jwt.PyJWKClientError:
            raise TokenError("the token's signing key is unknown to the issuer's JWKS") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"the token is invalid: {type(exc).__name__}") from None
        scopes = _scopes(claims)
        missing = [s for s in cfg.required_scopes if s not in scopes]
        if missing:
            raise TokenError(f"the token lacks scope(s) {' '.join(missing)}", insufficient_scope=True)
        return user_from_claims(claims, cfg, scopes)


class IntrospectionVerifier:
    """Asks the authorization server about each token (RFC 7662): active, audience, issuer, expiry, scopes."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def user_for(self, token: str) -> dict[str, Any]:
        """The caller the token stands for; TokenError when it must be refused."""
        import base64
        import json
        import time
        import urllib.error
        import urllib.parse
        import urllib.request

        cfg = self.settings
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
        request = urllib.request.Request(cfg.introspection_endpoint, data=body, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        if cfg.client_id:
            basic = base64.b64encode(f"{cfg.client_id}:{cfg.client_secret or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                claims = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            # Fail closed: a token that cannot be checked is refused.
            raise TokenError("the token could not be checked with the authorization server") from None
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise TokenError("the token is not active")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if cfg.audience not in audiences:
            raise TokenError("the token was issued for another audience")
        if "iss" in claims and claims["iss"] != cfg.issuer:
            raise TokenError("the token was issued by another issuer")
        if isinstance(claims.get("exp"), int | float) and claims["exp"] + cfg.leeway < time.time():
            raise TokenError("the token has expired")
        scopes = _scopes(claims)
        missing = [s for s in cfg.required_scopes if s not in scopes]
        if missing:
            raise TokenError(f"the token lacks scope(s) {' '.join(missing)}", insufficient_scope=True)
        return user_from_claims(claims, cfg, scopes)


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    raw = claims.get("scope", claims.get("scp", []))
    return raw.split() if isinstance(raw, str) else [str(s) for s in raw or []]


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name`: a top-level claim of that exact name (URIs have dots), else a dotted path."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def user_from_claims(claims: Mapping[str, Any], mapping: Any, scopes: list[str],
                     names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `user` for an identity: fields from the mapped (or same-named) claims, all claims kept.

    `mapping` has `claims` (field -> claim; `names` when given instead), `role_map` (claim value
    -> role) and `default_role`.
    """
    names = mapping.claims if names is None else names
    fields: dict[str, Any] = {"id": claim(claims, names.get("id", "sub")), "scopes": scopes, "claims": dict(claims)}
    for name in ("email", "name", "role", "groups"):
        value = claim(claims, names.get(name, name))
        if value is not None:
            fields[name] = value if name != "groups" or isinstance(value, list) else [value]
    if mapping.role_map or mapping.default_role:
        fields["role"] = _mapped_role(fields.get("role"), mapping.role_map, mapping.default_role)
    if fields["id"] is not None:
        fields["id"] = str(fields["id"])
    return make_user(fields)


def _mapped_role(value: Any, role_map: Mapping[str, str], default: str | None) -> str | None:
    """The role for the role claim's value(s): the first `role_map` entry they hold, else `default`."""
    held = {str(v) for v in value} if isinstance(value, list) else set(str(value).split()) if value else set()
    for claim_value, role in role_map.items():
        if claim_value in held:
            return role
    return default
