"""The ASGI layer in front of `/mcp`: authenticate every request, or answer 400/401/403 as the MCP
authorization spec says. The caller is handed on in the ASGI scope under ``mxcp.user``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread

from ..errors import ConfigError
from ..user import make_user
from .api_keys import ApiKeys
from .login import LoginServer
from .tokens import IntrospectionVerifier, JwtVerifier, TokenError

log = logging.getLogger("dbt_mxcp.auth")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
USER_KEY = "mxcp.user"
# Query parameters that would carry a credential in the URL (where proxies and logs keep it).
CREDENTIAL_PARAMS = {"access_token", "token", "api_key", "apikey", "key", "authorization"}
STDIO_KEY_ENV = "DBT_MXCP_API_KEY"


class Authenticator:
    """Turns a presented credential into the caller, per `auth` in mxcp.yml."""

    def __init__(self, settings: Any, login: LoginServer | None = None) -> None:
        self.settings = settings
        self.kind = settings.type
        self.keys = ApiKeys(settings.api_keys) if settings.type == "api_key" else None
        self.tokens: JwtVerifier | IntrospectionVerifier | LoginServer | None = None
        if settings.type == "login":
            if login is None:
                raise ConfigError("auth.type login serves over HTTP only (use auth.stdio_user for stdio)")
            self.tokens = login
        elif settings.type == "oauth":
            oauth = settings.oauth
            self.tokens = JwtVerifier(oauth) if oauth.jwks_uri else IntrospectionVerifier(oauth)

    def authenticate(self, credential: str) -> dict[str, Any]:
        """The caller for a bearer credential; TokenError when it is refused."""
        if self.keys is not None:
            user = self.keys.user_for(credential)
            if user is None:
                raise TokenError("unknown or revoked API key")
            return user
        assert self.tokens is not None
        return self.tokens.user_for(credential)

    def metadata(self) -> dict[str, Any] | None:
        """RFC 9728 protected-resource metadata (OAuth and login only)."""
        if isinstance(self.tokens, LoginServer):
            return self.tokens.metadata()
        oauth = self.settings.oauth
        if self.kind != "oauth" or oauth is None:
            return None
        return {"resource": oauth.resource_url or oauth.audience, "authorization_servers": [oauth.issuer],
                "scopes_supported": oauth.required_scopes, "bearer_methods_supported": ["header"]}


def stdio_caller(settings: Any) -> dict[str, Any]:
    """The caller of a stdio server: the API key in DBT_MXCP_API_KEY, else `auth.stdio_user`."""
    if settings.type == "api_key":
        key = os.environ.get(STDIO_KEY_ENV)
        if not key:
            raise ConfigError(f"auth.type is api_key: set {STDIO_KEY_ENV} to the caller's key for stdio")
        user = ApiKeys(settings.api_keys).user_for(key)
        if user is None:
            raise ConfigError(f"the key in {STDIO_KEY_ENV} is not a configured API key")
        return user
    return make_user(settings.stdio_user)


class AuthMiddleware:
    """Authenticates requests to `/mcp`; other paths (health, metadata) pass through.

    `authenticator` is asked for on every request, so keys revoked in mxcp.yml stop working at the
    next reload.
    """

    def __init__(self, app: ASGIApp, authenticator: Callable[[], Authenticator], metadata_url: str | None) -> None:
        self.app = app
        self.current = authenticator
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if CREDENTIAL_PARAMS & {k.lower() for k in query}:
            await _reply(send, 400, "invalid_request", "credentials are accepted only in the Authorization "
                                                       "header, never in the URL")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        credential = _credential(headers)
        if credential is None:
            await _reply(send, 401, "invalid_request", "authentication required", self._challenge())
            return
        auth = self.current()
        try:
            user = await anyio.to_thread.run_sync(auth.authenticate, credential)
        except TokenError as exc:
            if exc.insufficient_scope:
                scopes = " ".join(auth.settings.oauth.required_scopes)
                await _reply(send, 403, "insufficient_scope", str(exc),
                             self._challenge(f'error="insufficient_scope", scope="{scopes}"'))
            else:
                log.info("refused a credential: %s", exc)
                await _reply(send, 401, "invalid_token", str(exc), self._challenge('error="invalid_token"'))
            return
        scope[USER_KEY] = user
        await self.app(scope, receive, send)

    def _challenge(self, extra: str = "") -> str:
        parts = [p for p in (extra, f'resource_metadata="{self.metadata_url}"' if self.metadata_url else "") if p]
        return "Bearer" + (" " + ", ".join(parts) if parts else "")


class LiveAuthenticator:
    """The Authenticator for the settings currently served (rebuilt when a reload brings new ones)."""

    def __init__(self, settings: Callable[[], Any], login: LoginServer | None = None) -> None:
        self._settings = settings
        self._login = login
        self._for: Any = None
        self._auth: Authenticator | None = None

    def __call__(self) -> Authenticator:
        settings = self._settings()
        if self._auth is None or settings != self._for:
            self._auth, self._for = Authenticator(settings, self._login), settings
        return self._auth


def _credential(headers: dict[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return authorization[7:].strip()
    return headers.get("x-api-key") or None


async def _reply(send: Callable[[Any], Awaitable[None]], status: int, error: str, description: str,
                 challenge: str | None = None) -> None:
    body = json.dumps({"error": error, "error_description": description}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
