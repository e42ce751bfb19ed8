"""The stand-in identity provider for login tests: a real OAuth 2 / OpenID Connect provider on
127.0.0.1, built with authlib's own authorization server (Flask) in this test suite.

External identity providers (GitHub, Google, Keycloak, ...) cannot be reached from here; this is
the one stand-in allowed. It speaks the code flow with PKCE and nonce, signs ID tokens with a key
made here, publishes discovery, JWKS and userinfo, and answers GitHub-shaped profile calls
(`/user`, `/user/emails`, `/user/orgs`) for the GitHub preset. Whoever "logs in" is the user the
test names in `next_user`: the person typing a password is not what is under test.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import ClientMixin, grants  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oidc.core import UserInfo  # type: ignore[import-untyped]
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.models import AuthorizationCodeMixin  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

CLIENT_ID, CLIENT_SECRET = "dbt-mxcp-at-idp", "idp-client-secret-5c1e"


@dataclass
class Person:
    """Someone with an account at the provider."""

    sub: str
    email: str
    name: str
    groups: list[str] = field(default_factory=list)
    email_verified: bool = True
    orgs: list[str] = field(default_factory=list)


class _Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, redirect_uri: str) -> None:
        self.redirect_uri = redirect_uri

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, CLIENT_SECRET)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    person: Person
    created: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.created)


class IdentityProvider:
    """The provider's state: accounts, codes, tokens, its signing key; `url` once started."""

    def __init__(self, people: dict[str, Person]) -> None:
        self.people = people
        self.next_user = next(iter(people))
        self.url = ""
        self.redirect_uri = ""
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, Person] = {}
        self.token_requests = 0
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.key = RSAKey.import_key(pem, {"kid": "idp-key-1", "use": "sig", "alg": "RS256"})
        self.forge_nonce = False  # a provider returning an ID token for another login

    def app(self) -> Flask:
        """The Flask app: authlib's authorization server plus discovery, JWKS, userinfo and GitHub-ish API."""
        app = Flask("stand-in-idp")
        idp = self

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                payload = req.payload
                idp.codes[code] = _Code(code, payload.redirect_uri, payload.scope, payload.data.get("nonce"),
                                        payload.data.get("code_challenge"),
                                        payload.data.get("code_challenge_method"), req.user)

            def query_authorization_code(self, code: str, client: Any) -> _Code | None:
                return idp.codes.get(code)

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                idp.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> Person:
                return authorization_code.person

        class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in idp.codes.values())

            def resolve_client_private_key(self, client: Any) -> Any:
                return idp.key

            def get_client_algorithm(self, client: Any) -> str:
                return "RS256"

            def get_encode_header(self, client: Any) -> dict[str, str]:
                return {"alg": "RS256", "kid": "idp-key-1"}

            def get_client_claims(self, client: Any) -> dict[str, Any]:
                return {"iss": idp.url, "aud": [CLIENT_ID], "exp": int(time.time()) + 600}

            def get_authorization_code_claims(self, authorization_code: _Code) -> dict[str, Any]:
                claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
                if idp.forge_nonce:
                    claims["nonce"] = "someone-elses-nonce"
                return claims

            def generate_user_info(self, user: Person, scope: str) -> Any:
                return UserInfo(sub=user.sub, name=user.name, email=user.email, email_verified=user.email_verified,
                                groups=user.groups)

        def save_token(token: dict[str, Any], req: Any) -> None:
            idp.token_requests += 1
            idp.tokens[token["access_token"]] = req.user

        server = AuthorizationServer(app, query_client=lambda cid: _Client(idp.redirect_uri)
                                     if cid == CLIENT_ID else None, save_token=save_token)
        server.register_grant(CodeGrant, [OpenIDCode(require_nonce=False), CodeChallenge(required=True)])

        @app.route("/authorize")
        def authorize() -> Any:
            return server.create_authorization_response(grant_user=idp.people[idp.next_user])

        @app.route("/token", methods=["POST"])
        def token() -> Any:
            return server.create_token_response()

        @app.route("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify({"issuer": idp.url, "authorization_endpoint": f"{idp.url}/authorize",
                            "token_endpoint": f"{idp.url}/token", "userinfo_endpoint": f"{idp.url}/userinfo",
                            "jwks_uri": f"{idp.url}/jwks", "response_types_supported": ["code"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "code_challenge_methods_supported": ["S256"]})

        @app.route("/jwks")
        def jwks() -> Any:
            return jsonify({"keys": [idp.key.as_dict(private=False)]})

        def bearer() -> Person | None:
            header = request.headers.get("Authorization", "")
            return idp.tokens.get(header[7:]) if header.startswith("Bearer ") else None

        @app.route("/userinfo")
        def userinfo() -> Any:
            person = bearer()
            if person is None:
                return jsonify({"error": "invalid_token"}), 401
            return jsonify({"sub": person.sub, "email": person.email, "name": person.name,
                            "email_verified": person.email_verified, "groups": person.groups})

        @app.route("/api/user")
        def github_user() -> Any:  # GitHub's shape: `login`, a numeric `id`, a public email or null
            person = bearer()
            if person is None:
                return jsonify({"message": "Bad credentials"}), 401
            return jsonify({"login": person.sub, "id": abs(hash(person.sub)) % 10**8, "name": person.name,
                            "email": None})

        @app.route("/api/user/emails")
        def github_emails() -> Any:
            person = bearer()
            if person is None:
                return jsonify({"message": "Bad credentials"}), 401
            return jsonify([{"email": f"old-{person.email}", "primary": False, "verified": True},
                            {"email": person.email, "primary": True, "verified": person.email_verified}])

        @app.route("/api/user/orgs")
        def github_orgs() -> Any:
            person = bearer()
            if person is None:
                return jsonify({"message": "Bad credentials"}), 401
            return jsonify([{"login": org} for org in person.orgs])

        return app


@contextmanager
def running(people: dict[str, Person]) -> Iterator[IdentityProvider]:
    """Start the stand-in provider on a free 127.0.0.1 port; stop it afterwards."""
    idp = IdentityProvider(people)
    server = make_server("127.0.0.1", 0, idp.app(), threaded=True)
    idp.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        thread.join(5)
