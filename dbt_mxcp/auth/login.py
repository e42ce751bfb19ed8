"""OAuth login for MCP clients: this server is their authorization server, and delegates the login
itself to an identity provider (GitHub, Google, Keycloak, Atlassian, Salesforce, any OIDC).

The flow (RFC 6749 code flow with PKCE, RFC 8707 resource indicators):

1. The client registers (RFC 7591) and sends the person to ``/authorize``; the MCP SDK's handlers
   check the client, its redirect URI and PKCE, then call `LoginServer.authorize`.
2. ``/oauth/consent`` shows which client asks and where it will send the person back, and asks
   them to approve. The server uses one client id at the provider for every MCP client, so
   without this page any registered client could ride on an earlier login (the "confused
   deputy" of the MCP security guidance). The form is protected against cross-site posting and
   framing.
3. The provider's login, back at ``/oauth/callback``: the code is exchanged, the user's claims
   mapped to `user` (role, groups), and `allow` (CEL) decides who may log in, failing closed.
4. The client trades its code for this server's own access and refresh tokens at ``/token``.
   The provider's tokens are never handed on (no token passthrough).

This module and `server.transports` are where the MCP SDK's auth handlers are wired in.
"""

from __future__ import annotations

import hmac
import html
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread

from ..errors import ConfigError
from .providers import LoginError, Provider
from .store import LoginStore, digest, new_handle
from .tokens import TokenError, user_from_claims

log = logging.getLogger("dbt_mxcp.auth")
CODE_TTL = 300  # seconds an authorization code lives
PENDING_TTL = 600  # seconds a person has to approve and log in at the provider
CONSENT_PATH = "/oauth/consent"
CALLBACK_PATH = "/oauth/callback"
CSRF_COOKIE = "mxcp_consent"


def canonical(url: str) -> str:
    """A URL as RFC 8707 compares resources: lowercase scheme and host, no fragment, no trailing slash."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}" + (
        f"?{parts.query}" if parts.query else "")


class LoginServer:
    """The authorization server: the SDK's provider interface, plus the consent and callback pages."""

    def __init__(self, cfg: Any, base_url: str, store_path: Path, server_name: str) -> None:
        from ..endpoints import PolicyRule
        from ..policy import PolicySyntaxError, compile_rules

        self.cfg = cfg
        self.base_url = base_url.rstrip("/")
        self.resource = canonical(self.base_url + "/mcp")
        self.server_name = server_name
        self.provider = Provider(cfg, self.base_url + CALLBACK_PATH)
        self.store = LoginStore(store_path)
        self.allow = None
        if cfg.allow:
            try:
                self.allow = compile_rules([PolicyRule(condition=f"!({cfg.allow})", action="deny")], "login")
            except PolicySyntaxError as exc:
                raise ConfigError(f"auth.login.allow is not valid CEL: {str(exc).split(': ', 1)[-1]}") from None

    # -- the SDK's OAuthAuthorizationServerProvider -------------------------------------------------

    async def get_client(self, client_id: str) -> Any:
        """A registered client, or None."""
        from mcp.shared.auth import OAuthClientInformationFull

        info = self.store.client(client_id)
        return OAuthClientInformationFull.model_validate(info) if info else None

    async def register_client(self, client_info: Any) -> None:
        """Remember a client that registered itself (RFC 7591)."""
        self.store.add_client(str(client_info.client_id), client_info.model_dump(mode="json", exclude_none=True))

    async def authorize(self, client: Any, params: Any) -> str:
        """Park the request and send the person to the consent page."""
        from mcp.server.auth.provider import AuthorizeError

        if params.resource and canonical(params.resource) != self.resource:
            raise AuthorizeError("invalid_target", f"this server issues tokens for {self.resource} only")
        handle = new_handle()
        self.store.put("pending", handle, {
            "client_id": client.client_id, "client_name": client.client_name, "state": params.state,
            "scopes": params.scopes or [], "code_challenge": params.code_challenge,
            "redirect_uri": str(params.redirect_uri),
            "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
            "resource": params.resource}, PENDING_TTL)
        return f"{self.base_url}{CONSENT_PATH}?request={handle}"

    async def load_authorization_code(self, client: Any, authorization_code: str) -> Any:
        """The code's grant (it stays usable until exchanged or expired)."""
        from mcp.server.auth.provider import AuthorizationCode

        data = self.store.get("code", authorization_code)
        if data is None or data["client_id"] != client.client_id:
            return None
        return AuthorizationCode(code=authorization_code, scopes=data["scopes"], expires_at=data["expires_at"],
                                 client_id=data["client_id"], code_challenge=data["code_challenge"],
                                 redirect_uri=data["redirect_uri"],
                                 redirect_uri_provided_explicitly=data["redirect_uri_provided_explicitly"],
                                 resource=data["resource"], subject=data["user"]["id"])

    async def exchange_authorization_code(self, client: Any, authorization_code: Any) -> Any:
        """Trade a code (once) for this server's tokens."""
        from mcp.server.auth.provider import TokenError as SdkTokenError

        data = self.store.take("code", authorization_code.code)
        if data is None:  # a replayed code: someone else already used it
            raise SdkTokenError("invalid_grant", "the authorization code was already used or has expired")
        return self._issue(data)

    async def load_refresh_token(self, client: Any, refresh_token: str) -> Any:
        """The refresh token's grant, or None."""
        from mcp.server.auth.provider import RefreshToken

        data = self.store.get("refresh", refresh_token)
        if data is None or data["client_id"] != client.client_id:
            return None
        return RefreshToken(token=refresh_token, client_id=data["client_id"], scopes=data["scopes"],
                            expires_at=int(data["expires_at"]), resource=data["resource"], subject=data["user"]["id"])

    async def exchange_refresh_token(self, client: Any, refresh_token: Any, scopes: list[str]) -> Any:
        """New tokens for a refresh token, which is used up (rotation)."""
        from mcp.server.auth.provider import TokenError as SdkTokenError

        data = self.store.take("refresh", refresh_token.token)
        if data is None:
            raise SdkTokenError("invalid_grant", "the refresh token was already used, revoked or has expired")
        self.store.drop_digest(data["pair"])
        if not self._allowed(data["user"]):  # `allow` is asked again, so tightening it ends old logins
            raise SdkTokenError("invalid_grant", "this account may no longer use this server; log in again")
        if scopes and not set(scopes) <= set(data["scopes"]):
            raise SdkTokenError("invalid_scope", "a refresh cannot add scopes")
        return self._issue({**data, "scopes": scopes or data["scopes"]})

    async def load_access_token(self, token: str) -> Any:
        """An access token's grant, or None."""
        from mcp.server.auth.provider import AccessToken

        data = self.store.get("access", token)
        if data is None:
            return None
        return AccessToken(token=token, client_id=data["client_id"], scopes=data["scopes"],
                           expires_at=int(data["expires_at"]), resource=data["resource"], subject=data["user"]["id"])

    async def revoke_token(self, token: Any) -> None:
        """Revoke a token and its partner (the access token of a refresh token, and back)."""
        for kind in ("access", "refresh"):
            data = self.store.take(kind, token.token)
            if data is not None:
                self.store.drop_digest(data["pair"])

    async def exchange_identity_assertion(self, client: Any, params: Any) -> Any:
        """Enterprise identity assertions (SEP-990) are not accepted: people log in through the provider."""
        from mcp.server.auth.provider import TokenError as SdkTokenError

        raise SdkTokenError("unsupported_grant_type", "log in through the authorization endpoint instead")

    def _issue(self, grant: dict[str, Any]) -> Any:
        from mcp.shared.auth import OAuthToken

        access, refresh = new_handle("mxcp_at_"), new_handle("mxcp_rt_")
        now = time.time()
        common = {k: grant[k] for k in ("client_id", "scopes", "resource", "user")}
        self.store.put("access", access, {**common, "pair": digest(refresh),
                                          "expires_at": now + self.cfg.access_token_ttl}, self.cfg.access_token_ttl)
        self.store.put("refresh", refresh, {**common, "pair": digest(access),
                                            "expires_at": now + self.cfg.refresh_token_ttl},
                       self.cfg.refresh_token_ttl)
        return OAuthToken(access_token=access, token_type="Bearer", expires_in=self.cfg.access_token_ttl,
                          scope=" ".join(grant["scopes"]) or None, refresh_token=refresh)

    # -- the resource-server side -------------------------------------------------------------------

    def user_for(self, token: str) -> dict[str, Any]:
        """The caller an access token of this server stands for; TokenError when refused."""
        data = self.store.get("access", token)
        if data is None:
            raise TokenError("unknown, expired or revoked access token")
        if data.get("resource") and canonical(data["resource"]) != self.resource:
            raise TokenError("the token was issued for another resource")
        user: dict[str, Any] = data["user"]
        return {**user, "scopes": data["scopes"]}

    def metadata(self) -> dict[str, Any]:
        """RFC 9728 protected-resource metadata: this server is its own authorization server."""
        from pydantic import AnyHttpUrl

        # The issuer exactly as the SDK's metadata spells it (a bare host gets a "/"): clients compare them.
        issuer = str(AnyHttpUrl(self.base_url))
        return {"resource": self.resource, "authorization_servers": [issuer],
                "bearer_methods_supported": ["header"], "resource_name": self.server_name}

    # -- the pages --------------------------------------------------------------------------------

    def routes(self) -> list[Any]:
        """The SDK's authorization-server routes, the consent page and the provider's callback."""
        from mcp.server.auth.routes import create_auth_routes
        from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
        from pydantic import AnyHttpUrl
        from starlette.routing import Route

        routes = create_auth_routes(self, AnyHttpUrl(self.base_url),
                                    client_registration_options=ClientRegistrationOptions(enabled=True),
                                    revocation_options=RevocationOptions(enabled=True))
        return [*routes, Route(CONSENT_PATH, self.consent, methods=["GET", "POST"]),
                Route(CALLBACK_PATH, self.callback, methods=["GET"])]

    async def consent(self, request: Any) -> Any:
        """GET: ask the person to approve the client. POST: their answer."""
        from starlette.responses import RedirectResponse

        if request.method == "GET":
            handle = request.query_params.get("request", "")
            pending = self.store.get("pending", handle)
            if pending is None:
                return _page("This login request has expired or was already answered. Start again from "
                             "your MCP client.", 400)
            return self._consent_page(handle, pending)
        form = await request.form()
        handle = str(form.get("request", ""))
        token = str(form.get("csrf", ""))
        cookie = request.cookies.get(CSRF_COOKIE, "")
        # Double submit: a cross-site form cannot read or send our SameSite=Strict cookie.
        if not token or not hmac.compare_digest(token, cookie):
            return _page("This answer did not come from the consent page. Start again from your MCP client.", 403)
        pending = self.store.get("pending", handle)
        if pending is None:
            return _page("This login request has expired or was already answered. Start again from "
                         "your MCP client.", 400)
        if form.get("decision") != "approve":
            self.store.drop(handle)
            return RedirectResponse(_client_redirect(pending, error="access_denied",
                                                     error_description="the user declined"), 302)
        state, verifier, nonce = new_handle(), new_handle(), new_handle()
        try:
            url = await anyio.to_thread.run_sync(self.provider.authorization_url, state, verifier, nonce)
        except LoginError as exc:
            return _page(f"Cannot reach the identity provider: {exc}", 502)
        self.store.drop(handle)
        self.store.put("upstream", state, {**pending, "verifier": verifier, "nonce": nonce}, PENDING_TTL)
        response = RedirectResponse(url, 302)
        response.delete_cookie(CSRF_COOKIE, path=CONSENT_PATH)
        return response

    def _consent_page(self, handle: str, pending: dict[str, Any]) -> Any:
        csrf = new_handle()
        client = html.escape(pending.get("client_name") or pending["client_id"])
        back_to = html.escape(urlsplit(pending["redirect_uri"]).netloc or pending["redirect_uri"])
        provider = html.escape(self.cfg.provider)
        body = (f"<h1>{html.escape(self.server_name)}</h1>"
                f"<p><b>{client}</b> asks to use this server as you. After you log in with {provider}, "
                f"you will be sent back to <b>{back_to}</b>.</p>"
                f"<p>Approve only if you started this from that client just now.</p>"
                f'<form method="post" action="{CONSENT_PATH}">'
                f'<input type="hidden" name="request" value="{html.escape(handle)}">'
                f'<input type="hidden" name="csrf" value="{csrf}">'
                '<button name="decision" value="approve">Approve</button> '
                '<button name="decision" value="deny">Deny</button></form>')
        response = _page(body, 200, raw=True)
        response.set_cookie(CSRF_COOKIE, csrf, max_age=PENDING_TTL, path=CONSENT_PATH, httponly=True,
                            samesite="strict", secure=self.base_url.startswith("https://"))
        return response

    async def callback(self, request: Any) -> Any:
        """The provider sends the person back here: map who they are, check `allow`, give the client a code."""
        from starlette.responses import RedirectResponse

        pending = self.store.take("upstream", request.query_params.get("state", ""))
        if pending is None:
            return _page("This login has expired or was already completed. Start again from your MCP client.", 400)
        if request.query_params.get("error"):
            return RedirectResponse(_client_redirect(pending, error="access_denied",
                                                     error_description="the identity provider refused the login"), 302)
        try:
            claims = await anyio.to_thread.run_sync(self.provider.claims, request.query_params.get("code", ""),
                                                    pending["verifier"], pending["nonce"])
        except LoginError as exc:
            log.warning("login through %s failed: %s", self.cfg.provider, exc)
            return _page(f"The login could not be completed: {exc}", 502)
        user = user_from_claims(claims, self.cfg, [], names=self.provider.claim_names)
        if not self._allowed(user):
            log.info("login refused by auth.login.allow for %s", user.get("id"))
            return RedirectResponse(_client_redirect(pending, error="access_denied", error_description=(
                f"{user.get('id') or 'this account'} may not use this server")), 302)
        code = new_handle()
        self.store.put("code", code, {**{k: pending[k] for k in (
            "client_id", "scopes", "code_challenge", "redirect_uri", "redirect_uri_provided_explicitly", "resource")},
            "user": user, "expires_at": time.time() + CODE_TTL}, CODE_TTL)
        log.info("%s logged in through %s for client %s", user.get("id"), self.cfg.provider, pending["client_id"])
        return RedirectResponse(_client_redirect(pending, code=code), 302)

    def _allowed(self, user: dict[str, Any]) -> bool:
        from ..policy import denies_caller

        return self.allow is None or not denies_caller(self.allow, user)  # an error denies

    def close(self) -> None:
        """Close the store."""
        self.store.close()


def _client_redirect(pending: dict[str, Any], **params: str) -> str:
    from mcp.server.auth.provider import construct_redirect_uri

    return construct_redirect_uri(pending["redirect_uri"], state=pending.get("state"), **params)


def _page(text: str, status: int, raw: bool = False) -> Any:
    from starlette.responses import HTMLResponse

    body = text if raw else f"<p>{html.escape(text)}</p>"
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Log in</title>{body}", status, headers={
        "Cache-Control": "no-store", "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; form-action 'self' https: http:; frame-ancestors 'none'"})
