"""OAuth login for MCP clients: the server as their authorization server, logging people in through
an identity provider (here the stand-in built with authlib's own server, see tests/idp.py).

The MCP client is the SDK's own OAuth client (discovery, registration, PKCE, token exchange and
refresh); the person's browser is a requests session that follows redirects and clicks
"Approve" on the consent page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import anyio.to_thread
import httpx2
import pytest
import requests
import yaml
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.helpers import Project
from tests.idp import CLIENT_ID, CLIENT_SECRET, IdentityProvider, Person, running
from tests.integration.test_server import http_server_process

pytestmark = pytest.mark.anyio
CLIENT_REDIRECT = "http://127.0.0.1:9/callback"  # the MCP client's loopback redirect; the browser stops there

PEOPLE = {
    "alice": Person("alice", "alice@shop.example", "Alice", groups=["hr", "mxcp-admins"], orgs=["shop-data"]),
    "bob": Person("bob", "bob@elsewhere.example", "Bob", groups=["staff"]),
    "carol": Person("carol", "carol@shop.example", "Carol", groups=["staff"], email_verified=False),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with running(PEOPLE) as provider:
        yield provider


@pytest.fixture
def built(fresh_it_project: Project) -> Project:
    fresh_it_project.dbt("build")
    return fresh_it_project


def _login_settings(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    login = {"provider": "oidc", "issuer": idp.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
             "scopes": ["openid", "email", "profile"], "claims": {"id": "sub", "role": "groups"},
             "role_map": {"mxcp-admins": "admin"}, "default_role": "staff",
             "allow": "user.email.endsWith('@shop.example')", **overrides}
    return {"auth": {"type": "login", "login": login}}


@contextmanager
def login_server(project: Project, idp: IdentityProvider, **overrides: Any) -> Iterator[str]:
    (project.path / "mxcp.yml").write_text(yaml.safe_dump(_login_settings(idp, **overrides)))
    with http_server_process(project) as (base, _):
        idp.redirect_uri = f"{base}/oauth/callback"
        yield base


class Browser:
    """The person: follows redirects with cookies, approves (or denies) on the consent page."""

    def __init__(self, decision: str = "approve") -> None:
        self.session = requests.Session()
        self.decision = decision
        self.pages: list[requests.Response] = []

    def visit(self, url: str) -> str:
        """Follow `url` until the MCP client's redirect URI (returned), answering the consent form."""
        method, data = "GET", None
        for _ in range(10):
            if url.startswith(CLIENT_REDIRECT):
                return url
            response = self.session.request(method, url, data=data, allow_redirects=False, timeout=10)
            self.pages.append(response)
            method, data = "GET", None
            if response.is_redirect:
                url = response.headers["Location"]
            elif 'name="csrf"' in response.text:
                fields = dict(re.findall(r'name="(request|csrf)" value="([^"]+)"', response.text))
                method, data = "POST", {**fields, "decision": self.decision}
                url = url.split("?")[0]
            else:
                raise AssertionError(f"login stopped at {url}: {response.status_code} {response.text[:300]}")
        raise AssertionError("too many redirects")


class MemoryStorage(TokenStorage):
    """The MCP client's token and registration store."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def oauth(base: str, browser: Browser, storage: MemoryStorage | None = None) -> OAuthClientProvider:
    landed: dict[str, str] = {}

    async def redirect(url: str) -> None:
        landed["url"] = await anyio.to_thread.run_sync(browser.visit, url)

    async def callback() -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(landed["url"]).query)
        if "error" in query:
            raise PermissionError(f"{query['error'][0]}: {query.get('error_description', [''])[0]}")
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0])

    metadata = OAuthClientMetadata(client_name="Test Desktop Client", redirect_uris=[CLIENT_REDIRECT],  # type: ignore[list-item]
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none")
    return OAuthClientProvider(f"{base}/mcp", metadata, storage or MemoryStorage(), redirect, callback)


@asynccontextmanager
async def logged_in(base: str, browser: Browser, storage: MemoryStorage | None = None) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(auth=oauth(base, browser, storage), timeout=30) as http, \
            Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy") as c:  # type: ignore[arg-type]
        yield c


def _messages(exc: BaseException) -> str:
    """Every message in an exception and the groups around it (the SDK client wraps flow errors)."""
    inner = getattr(exc, "exceptions", ())
    return " | ".join([f"{type(exc).__name__}: {exc}", *(_messages(e) for e in inner)])


async def refused_login(base: str, browser: Browser) -> str:
    """Try to log in and list tools; the messages of the failure (the test fails if it succeeds)."""
    try:
        async with logged_in(base, browser) as c:
            await c.list_tools()
    except BaseException as exc:  # the client's task group raises an ExceptionGroup
        return _messages(exc)
    raise AssertionError("the login succeeded")


async def test_login_through_oidc_provider(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp) as base:
        idp.next_user = "alice"
        browser = Browser()
        storage = MemoryStorage()
        async with logged_in(base, browser, storage) as alice:
            # Groups came from the provider's claims: alice is in 'hr', so the HR-only tool is listed and runs.
            assert "salary_band" in {t.name for t in (await alice.list_tools()).tools}
            assert not (await alice.call_tool("salary_band", {"band_min": 0})).is_error
        consent = next(p for p in browser.pages if 'name="csrf"' in p.text)
        assert "Test Desktop Client" in consent.text and "127.0.0.1:9" in consent.text
        assert consent.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in \
            consent.headers["Content-Security-Policy"]
        # The client holds this server's own tokens, never the provider's.
        assert storage.tokens is not None and storage.tokens.access_token.startswith("mxcp_at_")
        assert storage.tokens.access_token not in idp.tokens
        access = storage.tokens.access_token
        async with httpx2.AsyncClient() as http:
            ok = await http.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                 headers={"Authorization": f"Bearer {access}", "Accept": "application/json, "
                                          "text/event-stream", "MCP-Protocol-Version": "2025-06-18"})
            assert ok.status_code != 401
            unknown = await http.post(f"{base}/mcp", json={}, headers={"Authorization": "Bearer mxcp_at_forged"})
            assert unknown.status_code == 401
            assert 'resource_metadata="' in unknown.headers["www-authenticate"]
            asm = (await http.get(f"{base}/.well-known/oauth-authorization-server")).json()
            prm = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
            assert prm["resource"] == f"{base}/mcp" and prm["authorization_servers"] == [asm["issuer"]]
            assert asm["code_challenge_methods_supported"] == ["S256"] and asm["registration_endpoint"]
    # The store keeps digests only: neither token is in the file.
    store = b"".join(p.read_bytes() for p in (built.path / "logs").glob("mxcp_oauth.sqlite*"))
    assert store and access.encode() not in store and storage.tokens.refresh_token.encode() not in store  # type: ignore[union-attr]
    records = json.loads(built.mxcp("log", "--output", "json").stdout)
    callers = {(r["caller"]["id"], r["caller"]["role"], r["endpoint"]["name"]) for r in records}
    assert ("alice", "admin", "salary_band") in callers


async def test_allow_refuses_outsiders_and_unverified_emails(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp) as base:
        for person in ("bob", "carol"):  # bob's address is elsewhere; carol's is not verified
            idp.next_user = person
            refused = await refused_login(base, Browser())
            assert f"access_denied: {person} may not use this server" in refused


async def test_declining_consent_and_forged_consent(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp) as base:
        idp.next_user = "alice"
        assert "access_denied: the user declined" in await refused_login(base, Browser(decision="deny"))

        # A cross-site form post carries the request handle but not the SameSite=Strict cookie.
        victim = requests.Session()
        registered = victim.post(f"{base}/register", json={"redirect_uris": [CLIENT_REDIRECT],
                                                           "token_endpoint_auth_method": "none",
                                                           "client_name": "Evil"}, timeout=10).json()
        query = urlencode({"response_type": "code", "client_id": registered["client_id"],
                           "redirect_uri": CLIENT_REDIRECT, "code_challenge": "x" * 43,
                           "code_challenge_method": "S256", "state": "s"})
        consent_url = victim.get(f"{base}/authorize?{query}", allow_redirects=False, timeout=10).headers["Location"]
        handle = parse_qs(urlsplit(consent_url).query)["request"][0]
        forged = requests.post(f"{base}/oauth/consent", data={"request": handle, "csrf": "guess",
                                                              "decision": "approve"}, allow_redirects=False, timeout=10)
        assert forged.status_code == 403 and forged.headers.get("Location") is None
        # An unknown or used-up login state at the callback is refused with a page, not a code.
        stale = requests.get(f"{base}/oauth/callback?state=nope&code=x", allow_redirects=False, timeout=10)
        assert stale.status_code == 400 and "expired" in stale.text


async def test_codes_once_refresh_rotates_revoke_and_resource(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp) as base:
        idp.next_user = "alice"
        browser = Browser()
        registered = requests.post(f"{base}/register", json={"redirect_uris": [CLIENT_REDIRECT],
                                                             "token_endpoint_auth_method": "none"}, timeout=10).json()
        verifier = "v" * 64
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        authorize = {"response_type": "code", "client_id": registered["client_id"], "redirect_uri": CLIENT_REDIRECT,
                     "code_challenge": challenge, "code_challenge_method": "S256", "state": "st8"}
        # A token for another resource (RFC 8707) is not issued.
        other = requests.get(f"{base}/authorize?{urlencode({**authorize, 'resource': 'https://other.example/mcp'})}",
                             allow_redirects=False, timeout=10)
        assert "invalid_target" in other.headers["Location"]
        start = f"{base}/authorize?{urlencode({**authorize, 'resource': base + '/mcp'})}"
        landed = await anyio.to_thread.run_sync(browser.visit, start)
        code = parse_qs(urlsplit(landed).query)["code"][0]
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": CLIENT_REDIRECT,
                    "client_id": registered["client_id"], "code_verifier": verifier}
        wrong_verifier = requests.post(f"{base}/token", data={**exchange, "code_verifier": "w" * 64}, timeout=10)
        assert wrong_verifier.status_code == 400 and wrong_verifier.json()["error"] == "invalid_grant"
        first = requests.post(f"{base}/token", data=exchange, timeout=10)
        assert first.status_code == 200, first.text
        replay = requests.post(f"{base}/token", data=exchange, timeout=10)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        tokens = first.json()

        def status(access: str) -> int:
            return requests.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10,
                                 headers={"Authorization": f"Bearer {access}",
                                          "Accept": "application/json, text/event-stream"}).status_code

        assert status(tokens["access_token"]) != 401
        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                   "client_id": registered["client_id"]}
        renewed = requests.post(f"{base}/token", data=refresh, timeout=10)
        assert renewed.status_code == 200, renewed.text
        assert renewed.status_code == 200 and renewed.json()["refresh_token"] != tokens["refresh_token"]
        # Rotation: the old refresh token and its access token are gone.
        assert requests.post(f"{base}/token", data=refresh, timeout=10).json()["error"] == "invalid_grant"
        assert status(tokens["access_token"]) == 401
        fresh = renewed.json()["access_token"]
        assert status(fresh) != 401
        # The SDK's revocation handler wants a client_secret field even from a public client.
        revoked = requests.post(f"{base}/revoke", data={"token": fresh, "client_id": registered["client_id"],
                                                        "client_secret": ""}, timeout=10)
        assert revoked.status_code == 200, revoked.text
        assert status(fresh) == 401


async def test_id_token_for_another_login_is_refused(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp) as base:
        idp.next_user = "alice"
        idp.forge_nonce = True
        browser = Browser()
        try:
            refused = await refused_login(base, browser)
        finally:
            idp.forge_nonce = False
        assert "/oauth/callback" in refused and browser.pages[-1].status_code == 502
        assert "nonce mismatch" in browser.pages[-1].text


async def test_github_preset(built: Project, idp: IdentityProvider) -> None:
    # GitHub is plain OAuth 2: who logged in comes from its API (login, private email, organisations).
    overrides = {"provider": "github", "issuer": None, "authorize_url": f"{idp.url}/authorize",
                 "token_url": f"{idp.url}/token", "userinfo_url": f"{idp.url}/api/user",
                 "scopes": ["read:user", "user:email", "read:org"], "claims": {"role": "groups"},
                 "role_map": {"shop-data": "analyst"},
                 "default_role": "visitor", "allow": "'shop-data' in user.groups"}
    with login_server(built, idp, **overrides) as base:
        idp.next_user = "alice"
        async with logged_in(base, Browser()) as alice:
            assert (await alice.list_tools()).tools
            assert not (await alice.call_tool("team_summary", {"team": "eng"})).is_error
        idp.next_user = "bob"  # not in the organisation
        assert "access_denied: bob may not use this server" in await refused_login(base, Browser())
    records = json.loads(built.mxcp("log", "--output", "json").stdout)
    alice = next(r["caller"] for r in records if r["endpoint"]["name"] == "team_summary")
    assert (alice["id"], alice["email"], alice["role"], alice["groups"]) == (
        "alice", "alice@shop.example", "analyst", ["shop-data"])


async def test_unreachable_provider_is_a_clear_page(built: Project, idp: IdentityProvider) -> None:
    with login_server(built, idp, issuer="http://127.0.0.1:9/nowhere") as base:
        browser = Browser()
        await refused_login(base, browser)
        assert browser.pages[-1].status_code == 502
        assert "did not answer" in browser.pages[-1].text and CLIENT_SECRET not in browser.pages[-1].text
