"""Identity providers MCP clients log in through: where each one's endpoints are, and who the user is.

GitHub and Atlassian are plain OAuth 2 (a profile API says who logged in); Google, Keycloak,
Salesforce and any OIDC provider are found by OIDC discovery and prove the user with an ID
token, checked here against the provider's keys (signature, issuer, audience, expiry, nonce).
The HTTP work is authlib's OAuth 2 client (PKCE on every provider).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

TIMEOUT = 10  # seconds for any request to the identity provider


class LoginError(Exception):
    """A login that cannot complete; the message is safe to show to the person logging in."""


@dataclass(frozen=True)
class Upstream:
    """One identity provider's endpoints and defaults."""

    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str | None = None
    issuer: str | None = None  # set for OIDC providers: the ID token's `iss`
    jwks_uri: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    claims: dict[str, str] = field(default_factory=dict)  # default user field -> claim
    params: dict[str, str] = field(default_factory=dict)  # extra authorization parameters


PRESETS: dict[str, Upstream] = {
    "github": Upstream(authorize_url="https://github.com/login/oauth/authorize",
                       token_url="https://github.com/login/oauth/access_token",
                       userinfo_url="https://api.github.com/user", scopes=("read:user", "user:email"),
                       claims={"id": "login"}),
    "atlassian": Upstream(authorize_url="https://auth.atlassian.com/authorize",
                          token_url="https://auth.atlassian.com/oauth/token",
                          userinfo_url="https://api.atlassian.com/me", scopes=("read:me",),
                          claims={"id": "account_id"}, params={"audience": "api.atlassian.com", "prompt": "consent"}),
}


def discovery_issuer(cfg: Any) -> str | None:
    """The issuer whose OIDC discovery document describes the provider (None for plain OAuth 2)."""
    if cfg.provider == "google":
        return "https://accounts.google.com"
    if cfg.provider == "salesforce":
        return f"https://{cfg.domain}"
    if cfg.provider == "keycloak":
        return f"{cfg.server_url.rstrip('/')}/realms/{cfg.realm}"
    if cfg.provider == "oidc":
        return str(cfg.issuer).rstrip("/")
    return None


def _get_json(url: str, token: str | None = None) -> Any:
    import requests

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = requests.get(url, headers=headers, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise LoginError(f"the identity provider did not answer {url.split('?')[0]}: {type(exc).__name__}") from None


class Provider:
    """The configured identity provider: authorization URLs out, the user's claims back."""

    def __init__(self, cfg: Any, callback_url: str) -> None:
        self.cfg = cfg
        self.callback_url = callback_url
        self._upstream: Upstream | None = None
        self._lock = threading.Lock()
        self._jwks: Any = None

    @property
    def claim_names(self) -> dict[str, str]:
        """The provider's default claim mapping under the configured one."""
        return {**PRESETS.get(self.cfg.provider, Upstream()).claims, **self.cfg.claims}

    def upstream(self) -> Upstream:
        """The provider's endpoints: the preset or the discovery document, then the configured overrides."""
        with self._lock:
            if self._upstream is None:
                self._upstream = self._resolve()
            return self._upstream

    def _resolve(self) -> Upstream:
        cfg = self.cfg
        base = PRESETS.get(cfg.provider, Upstream())
        issuer = discovery_issuer(cfg)
        if issuer is not None:
            doc = _get_json(f"{issuer}/.well-known/openid-configuration")
            if not isinstance(doc, dict) or doc.get("issuer", "").rstrip("/") != issuer:
                raise LoginError(f"the discovery document of {issuer} names another issuer")
            base = replace(base, authorize_url=doc.get("authorization_endpoint", ""),
                           token_url=doc.get("token_endpoint", ""), userinfo_url=doc.get("userinfo_endpoint"),
                           issuer=doc["issuer"], jwks_uri=doc.get("jwks_uri"))
        scopes = tuple(cfg.scopes) if cfg.scopes is not None else base.scopes
        upstream = replace(base, authorize_url=cfg.authorize_url or base.authorize_url,
                           token_url=cfg.token_url or base.token_url,
                           userinfo_url=cfg.userinfo_url or base.userinfo_url, scopes=scopes)
        if not (upstream.authorize_url and upstream.token_url):
            raise LoginError(f"the {cfg.provider} provider has no authorization or token endpoint")
        return upstream

    def _session(self, upstream: Upstream) -> Any:
        from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

        return OAuth2Session(self.cfg.client_id, self.cfg.client_secret, scope=" ".join(upstream.scopes),
                             redirect_uri=self.callback_url, code_challenge_method="S256",
                             token_endpoint_auth_method="client_secret_post" if self.cfg.client_secret else "none",
                             default_timeout=TIMEOUT)

    def authorization_url(self, state: str, code_verifier: str, nonce: str) -> str:
        """Where to send the person logging in."""
        upstream = self.upstream()
        extra = dict(upstream.params)
        if upstream.issuer:
            extra["nonce"] = nonce
        url, _ = self._session(upstream).create_authorization_url(upstream.authorize_url, state=state,
                                                                   code_verifier=code_verifier, **extra)
        return str(url)

    def claims(self, code: str, code_verifier: str, nonce: str) -> dict[str, Any]:
        """Exchange the provider's code and return who logged in (the provider's tokens are then dropped)."""
        upstream = self.upstream()
        session = self._session(upstream)
        try:
            token = session.fetch_token(upstream.token_url, code=code, code_verifier=code_verifier)
        except Exception as exc:  # authlib's OAuthError, requests' errors: never echo the response
            raise LoginError(f"the identity provider refused the login code ({type(exc).__name__})") from None
        access = token.get("access_token")
        claims: dict[str, Any] = {}
        if upstream.issuer:
            if not token.get("id_token"):
                raise LoginError("the identity provider returned no ID token; is `openid` among the scopes?")
            claims.update(self._id_token_claims(upstream, str(token["id_token"]), nonce))
        if upstream.userinfo_url and access:
            info = _get_json(upstream.userinfo_url, access)
            if isinstance(info, dict):
                if upstream.issuer and info.get("sub") != claims.get("sub"):
                    raise LoginError("the identity provider's userinfo names another user than its ID token")
                claims = {**info, **claims}
        if self.cfg.provider == "github" and access:
            claims.update(self._github_extras(claims, access, upstream))
        if claims.get("email_verified") is False:
            claims.pop("email", None)  # an address the provider has not verified proves nothing
        if not claims:
            raise LoginError("the identity provider said nothing about who logged in")
        return claims

    def _id_token_claims(self, upstream: Upstream, id_token: str, nonce: str) -> dict[str, Any]:
        import jwt

        if self._jwks is None:
            if not upstream.jwks_uri:
                raise LoginError("the identity provider publishes no jwks_uri to check its ID tokens with")
            self._jwks = jwt.PyJWKClient(upstream.jwks_uri, cache_keys=True, lifespan=300, timeout=TIMEOUT)
        algorithms = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token)
            claims: dict[str, Any] = jwt.decode(id_token, key.key, algorithms=algorithms, audience=self.cfg.client_id,
                                                issuer=upstream.issuer, leeway=30,
                                                options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError as exc:
            raise LoginError(f"the identity provider's ID token is not valid ({type(exc).__name__})") from None
        if claims.get("nonce") != nonce:
            raise LoginError("the identity provider's ID token is not for this login (nonce mismatch)")
        return claims

    def _github_extras(self, claims: dict[str, Any], access: str, upstream: Upstream) -> dict[str, Any]:
        """GitHub keeps a private email and the user's organisations behind separate calls."""
        api = (upstream.userinfo_url or "").rsplit("/user", 1)[0]
        extras: dict[str, Any] = {}
        if not claims.get("email") and "user:email" in upstream.scopes:
            emails = _get_json(f"{api}/user/emails", access)
            primary = [e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")]
            if primary:
                extras["email"] = primary[0].get("email")
        if "read:org" in upstream.scopes:
            orgs = _get_json(f"{api}/user/orgs", access)
            extras["groups"] = [o.get("login") for o in orgs if isinstance(o, dict)]
        return extras
