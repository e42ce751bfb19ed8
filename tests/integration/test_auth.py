"""Authentication: API keys and OAuth 2.1 bearer JWTs over HTTP, identities over stdio, and lists
filtered to what the caller may call.

The identity provider cannot be reached from here, so its one public part the server uses — the
JWKS document — is served by a small real HTTP server on 127.0.0.1 written in this test (the stand-in
for the IdP), with keys generated in the test and tokens signed with them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx2
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from dbt_mxcp.auth.api_keys import hash_key
from tests.helpers import BIN, Project, env
from tests.integration.test_server import http_server

pytestmark = pytest.mark.anyio
HR_KEY, STAFF_KEY = "mxcp_hr_7d1f9a", "mxcp_staff_2b8c4e"
ISSUER, AUDIENCE = "http://127.0.0.1/idp", "http://127.0.0.1/mcp-under-test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def client_with(base: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers=headers) as http, \
            Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy") as c:  # type: ignore[arg-type]
        yield c


def _settings(project: Project, settings: dict[str, Any]) -> None:
    (project.path / "mxcp.yml").write_text(yaml.safe_dump(settings))


API_KEYS = {"auth": {"type": "api_key", "api_keys": [
    {"name": "hr-bot", "sha256": hash_key(HR_KEY), "user": {"role": "hr", "groups": ["hr"]}},
    {"name": "staff-bot", "sha256": hash_key(STAFF_KEY), "user": {"role": "staff", "groups": ["staff"]}},
]}}


async def test_api_keys(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    _settings(project, API_KEYS)
    with http_server(project) as base:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        async with httpx2.AsyncClient() as http:
            none = await http.post(f"{base}/mcp", json=body)
            assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
            wrong = await http.post(f"{base}/mcp", json=body, headers={"Authorization": "Bearer mxcp_nope"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
            in_url = await http.post(f"{base}/mcp?api_key={HR_KEY}", json=body)
            assert in_url.status_code == 400 and "never in the URL" in in_url.json()["error_description"]
        async with client_with(base, {"Authorization": f"Bearer {HR_KEY}"}) as hr:
            assert "salary_band" in {t.name for t in (await hr.list_tools()).tools}
            assert not (await hr.call_tool("salary_band", {"band_min": 0})).is_error
        async with client_with(base, {"X-API-Key": STAFF_KEY}) as staff:
            # A tool whose user-only deny rule denies this caller is left out of its list, and still refused.
            assert "salary_band" not in {t.name for t in (await staff.list_tools()).tools}
            denied = await staff.call_tool("salary_band", {"band_min": 0})
            assert denied.is_error and denied.content[0].text == "HR only"  # type: ignore[union-attr]
        # Revocation: the key leaves mxcp.yml; the next reload refuses it.
        _settings(project, {"auth": {**API_KEYS["auth"], "api_keys": API_KEYS["auth"]["api_keys"][1:]}})
        async with httpx2.AsyncClient() as http:
            deadline = time.monotonic() + 10
            status = 200
            while time.monotonic() < deadline and status != 401:
                await anyio.sleep(0.2)
                status = (await http.post(f"{base}/mcp", json=body,
                                          headers={"Authorization": f"Bearer {HR_KEY}"})).status_code
            assert status == 401
    records = json.loads(project.mxcp("log", "--output", "json").stdout)
    assert {(r["caller"]["id"], r["status"]) for r in records} == {("hr-bot", "ok"), ("staff-bot", "denied")}
    assert HR_KEY not in "".join(p.read_text() for p in (project.path / "logs").iterdir() if p.suffix == ".jsonl")


class _JsonHandler(BaseHTTPRequestHandler):
    """A stand-in server's request handler: `answer(request body)` gives the JSON to send back."""

    answer: Any = None

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        document = json.dumps(type(self).answer(self, self.rfile.read(length).decode())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(document)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stand_in(answer: Any, path: str) -> Iterator[str]:
    """A small real HTTP server on 127.0.0.1 answering JSON (the identity provider's stand-in)."""
    handler = type("Handler", (_JsonHandler,), {"answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


def jwks_server(keys: list[dict[str, Any]]) -> Any:
    """The stand-in identity provider's JWKS document."""
    return stand_in(lambda request, body: {"keys": keys}, "/jwks.json")


def _public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def _token(key: rsa.RSAPrivateKey, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ann", "email": "ann@example.com", "role": "admin",
              "scope": "mcp:read", "iat": now, "exp": now + 300, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": kid})


async def test_oauth_resource_server(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with jwks_server([_public_jwk(signing, "k1")]) as jwks:
        _settings(project, {"auth": {"type": "oauth", "oauth": {
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_uri": jwks, "required_scopes": ["mcp:read"]}}})
        with http_server(project) as base:
            good = _token(signing, "k1")
            async with client_with(base, {"Authorization": f"Bearer {good}"}) as c:
                result = await c.call_tool("search_people", {"name_query": "ann"})
                # role comes from the token: admins see emails unmasked (the output policy masks others)
                assert "****" not in json.dumps(result.structured_content)
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}, key=None,
                                  algorithm="none")
            refused = {
                "expired": _token(signing, "k1", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
                "wrong audience": _token(signing, "k1", aud="http://127.0.0.1/another-service"),
                "wrong issuer": _token(signing, "k1", iss="http://127.0.0.1/evil-idp"),
                "alg none": unsigned,
                "unknown kid": _token(stranger, "k2"),
                "forged": _token(stranger, "k1"),
                "not a jwt": "hello",
            }
            async with httpx2.AsyncClient() as http:
                for label, token in refused.items():
                    answer = await http.post(f"{base}/mcp", json=body, headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 401, label
                    challenge = answer.headers["www-authenticate"]
                    assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge, label
                scopeless = _token(signing, "k1", scope="other")
                answer = await http.post(f"{base}/mcp", json=body, headers={"Authorization": f"Bearer {scopeless}"})
                assert answer.status_code == 403
                assert 'error="insufficient_scope", scope="mcp:read"' in answer.headers["www-authenticate"]
                metadata = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
                assert metadata["authorization_servers"] == [ISSUER] and metadata["resource"] == AUDIENCE
    logs = "".join(p.read_text() for p in (project.path / "logs").iterdir() if p.suffix == ".jsonl")
    assert good not in logs  # tokens never reach the logs


async def test_stdio_identity_from_settings(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    params = StdioServerParameters(command=str(BIN / "dbt-mxcp"), env=env(), args=[
        "serve", "--project-dir", str(project.path), "--profiles-dir", str(project.path)])
    async with Client(params, mode="legacy") as c:  # type: ignore[arg-type]
        assert "salary_band" not in {t.name for t in (await c.list_tools()).tools}  # anonymous
    _settings(project, {"auth": {"stdio_user": {"id": "analyst", "groups": ["hr"]}}})
    async with Client(params, mode="legacy") as c:  # type: ignore[arg-type]
        assert "salary_band" in {t.name for t in (await c.list_tools()).tools}
        assert not (await c.call_tool("salary_band", {"band_min": 0})).is_error
    _settings(project, API_KEYS)
    keyed = StdioServerParameters(command=params.command, args=params.args, env=env(DBT_MXCP_API_KEY=STAFF_KEY))
    async with Client(keyed, mode="legacy") as c:  # type: ignore[arg-type]
        assert (await c.call_tool("salary_band", {"band_min": 0})).is_error
    records = json.loads(project.mxcp("log", "--output", "json").stdout)
    assert [(r["caller"]["id"], r["transport"]) for r in records] == [("analyst", "stdio"), ("staff-bot", "stdio")]


def introspection_server(answers: dict[str, dict[str, Any]], seen: list[str]) -> Any:
    """The stand-in authorization server: answers RFC 7662 introspection for known opaque tokens."""
    from urllib.parse import parse_qs

    def answer(request: BaseHTTPRequestHandler, body: str) -> dict[str, Any]:
        seen.append(request.headers.get("Authorization", ""))
        return answers.get(parse_qs(body)["token"][0], {"active": False})

    return stand_in(answer, "/introspect")


async def test_oauth_token_introspection(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    now = int(time.time())
    answers = {
        "opaque-good": {"active": True, "aud": AUDIENCE, "iss": ISSUER, "sub": "hr-analyst", "groups": ["hr"],
                        "scope": "mcp:read", "exp": now + 300},
        "opaque-other-service": {"active": True, "aud": "http://127.0.0.1/other", "iss": ISSUER, "exp": now + 300},
        "opaque-expired": {"active": True, "aud": AUDIENCE, "iss": ISSUER, "exp": now - 600},
    }
    seen: list[str] = []
    with introspection_server(answers, seen) as endpoint:
        _settings(project, {"auth": {"type": "oauth", "oauth": {
            "issuer": ISSUER, "audience": AUDIENCE, "introspection_endpoint": endpoint,
            "client_id": "mcp-server", "client_secret": "s3cret"}}})
        with http_server(project) as base:
            async with client_with(base, {"Authorization": "Bearer opaque-good"}) as c:
                assert not (await c.call_tool("salary_band", {"band_min": 0})).is_error  # groups from the answer
            async with httpx2.AsyncClient() as http:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                for token in ("opaque-other-service", "opaque-expired", "opaque-unknown"):
                    answer = await http.post(f"{base}/mcp", json=body, headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 401, token
    assert seen and all(h.startswith("Basic ") for h in seen)  # the server authenticated itself
    # With the authorization server gone, tokens cannot be checked: refused, never let through.
    with http_server(project) as base:
        async with httpx2.AsyncClient() as http:
            answer = await http.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                     headers={"Authorization": "Bearer opaque-good"})
        assert answer.status_code == 401
