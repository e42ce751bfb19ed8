"""`mxcp.yml` at the dbt project root: server settings, with per-target overrides.

```yaml
server: {name: Shop data, instructions: Answer questions about orders.}
limits: {max_rows: 1000, max_bytes: 10000000, timeout: 30}
writes: {enabled: true, path: "{{ env_var('MXCP_WRITES', 'target/mxcp_writes.duckdb') }}"}
targets:            # keyed by dbt target, like profiles.yml; merged over the settings above
  prod:
    limits: {max_rows: 200}
```
Strings may use ``{{ env_var('X', 'default') }}`` and ``{{ var('x') }}``. Unknown keys are errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from .endpoints import Policies
from .engine import Limits
from .errors import ConfigError
from .project import read_yaml, render_jinja

SETTINGS_FILE = "mxcp.yml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    """What the MCP server tells clients about itself."""

    name: str | None = None
    instructions: str | None = None


class LimitSettings(_Strict):
    """Caps for every call; an endpoint's own caps can only be lower."""

    max_rows: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=10_000_000, ge=1)
    timeout: float = Field(default=30.0, gt=0)


class RateLimit(_Strict):
    """At most `calls` calls per `per_seconds` (a bucket that refills steadily)."""

    calls: int = Field(ge=1)
    per_seconds: float = Field(default=60.0, gt=0)


class RateLimitSettings(_Strict):
    """Rate limits for each caller and for each endpoint (none by default)."""

    per_caller: RateLimit | None = None
    per_endpoint: RateLimit | None = None


class WriteSettings(_Strict):
    """The separate database that `access: write` endpoints change (never dbt's warehouse)."""

    enabled: bool = False
    path: str = "target/mxcp_writes.duckdb"
    publish_path: str = "target/mxcp_writes_published.duckdb"
    init_sql: str | None = None  # run when the database opens, e.g. `create table if not exists ...`


class AuditSettings(_Strict):
    """The audit log: one record per call, written before the call is answered."""

    enabled: bool = True
    sink: Literal["jsonl", "duckdb", "postgres"] = "jsonl"
    path: str | None = None  # jsonl/duckdb: the file; default mxcp_audit.jsonl/.duckdb under dbt's log-path
    postgres_dsn: str | None = None  # postgres: e.g. "{{ env_var('MXCP_AUDIT_DSN') }}"
    table: str = "mxcp_audit"  # duckdb/postgres: the table, created if missing
    strict: bool = True
    fsync: Literal["every", "interval", "os"] = "interval"
    fsync_interval: float = Field(default=1.0, gt=0)
    max_bytes: int = Field(default=100_000_000, ge=1000)
    backups: int = Field(default=10, ge=1)
    hmac_key: str | None = None  # default: a random key in mxcp_audit.key beside the log
    results: bool = False  # also record what each answered call returned (sensitive fields as HMAC)


class ApiKey(_Strict):
    """One API key: the SHA-256 of the key (never the key itself) and the user it stands for."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None  # a label for the key, shown in logs instead of the key


class ClaimMapping(_Strict):
    """How an identity provider's claims become the `user` that policies see."""

    # user field (id, email, name, role, groups) -> claim name, or a dotted path into nested claims
    claims: dict[str, str] = Field(default_factory=dict)
    role_map: dict[str, str] = Field(default_factory=dict)  # role claim value -> role (first listed match wins)
    default_role: str | None = None  # the role when no role_map entry matches


class OAuthSettings(ClaimMapping):
    """The server as an OAuth 2.1 resource server: bearer JWTs checked against the issuer's JWKS."""

    issuer: str
    audience: str  # mandatory: a token minted for another service is refused
    jwks_uri: str | None = None  # JWTs checked locally against the issuer's keys ...
    introspection_endpoint: str | None = None  # ... or any token asked about (RFC 7662)
    client_id: str | None = None  # the server's credentials at the introspection endpoint
    client_secret: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway: int = Field(default=30, ge=0, le=300)
    required_scopes: list[str] = Field(default_factory=list)
    resource_url: str | None = None  # this server's public URL, for the RFC 9728 metadata

    @model_validator(mode="after")
    def _one_way(self) -> OAuthSettings:
        if (self.jwks_uri is None) == (self.introspection_endpoint is None):
            raise ValueError("auth.oauth needs exactly one of jwks_uri (JWTs) or introspection_endpoint (RFC 7662)")
        return self


# Identity providers where anyone on the internet has an account: a login there proves nothing
# about membership, so `allow` must say who may use the server.
PUBLIC_PROVIDERS = ("github", "google", "atlassian", "salesforce")


class LoginSettings(ClaimMapping):
    """The server as the OAuth authorization server MCP clients log in with, delegating to an identity provider."""

    provider: Literal["github", "google", "keycloak", "atlassian", "salesforce", "oidc"]
    client_id: str  # this server's client at the identity provider
    client_secret: str | None = None  # e.g. "{{ env_var('GITHUB_CLIENT_SECRET') }}"
    base_url: str | None = None  # this server's public URL; default http://HOST:PORT of `serve`
    scopes: list[str] | None = None  # asked of the identity provider; default per provider
    issuer: str | None = None  # oidc: the provider's issuer (discovery at ISSUER/.well-known/openid-configuration)
    server_url: str | None = None  # keycloak: e.g. https://sso.example.com
    realm: str | None = None  # keycloak
    domain: str = "login.salesforce.com"  # salesforce: or your My Domain
    authorize_url: str | None = None  # override the provider's endpoints (a provider without discovery)
    token_url: str | None = None
    userinfo_url: str | None = None
    allow: str | None = None  # CEL over `user`: who may log in (required for public providers)
    access_token_ttl: int = Field(default=3600, ge=60)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=60)
    store: str | None = None  # clients and tokens (hashed); default mxcp_oauth.sqlite under dbt's log-path

    @model_validator(mode="after")
    def _complete(self) -> LoginSettings:
        if self.provider in PUBLIC_PROVIDERS and not self.allow:
            raise ValueError(f"auth.login: anyone can log in with {self.provider}; set `allow` to a CEL condition on "
                             "`user` saying who may use this server, e.g. \"user.email.endsWith('@example.com')\"")
        if self.provider == "oidc" and not self.issuer:
            raise ValueError("auth.login provider oidc needs `issuer` (discovery is read from "
                             "ISSUER/.well-known/openid-configuration)")
        if self.provider == "keycloak" and not (self.server_url and self.realm):
            raise ValueError("auth.login provider keycloak needs `server_url` and `realm`")
        return self


class AuthSettings(_Strict):
    """Who may call: `none`, `api_key`, `oauth` (external tokens) or `login` (HTTP); stdio callers are `stdio_user`."""

    type: Literal["none", "api_key", "oauth", "login"] = "none"
    api_keys: list[ApiKey] = Field(default_factory=list)
    oauth: OAuthSettings | None = None
    login: LoginSettings | None = None
    stdio_user: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.type == "oauth" and self.oauth is None:
            raise ValueError("auth.type oauth needs an `oauth` section (issuer, audience, jwks_uri)")
        if self.type == "login" and self.login is None:
            raise ValueError("auth.type login needs a `login` section (provider, client_id, client_secret)")
        if self.type == "api_key" and not self.api_keys:
            raise ValueError("auth.type api_key needs at least one entry under `api_keys`")
        return self


class EvalSettings(_Strict):
    """The LLM that `dbt-mxcp evals` asks (see docs/evals.md)."""

    provider: Literal["anthropic", "openai"] = "anthropic"  # openai: any Chat Completions API, local ones too
    model: str | None = None  # needed to run evals; a suite's `model` or `--model` overrides it
    base_url: str | None = None  # default https://api.anthropic.com or https://api.openai.com/v1
    api_key: SecretStr | None = None  # default $ANTHROPIC_API_KEY / $OPENAI_API_KEY; never printed
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)  # None: the provider's default
    timeout: float = Field(default=120.0, gt=0)  # seconds per LLM request
    path: str = "evals"  # the folder of eval suites (*.yml), relative to the project


class Settings(_Strict):
    """All of `mxcp.yml` for one target."""

    @model_validator(mode="after")
    def _audit_sink(self) -> Settings:
        if self.audit.enabled and self.audit.sink == "postgres" and not self.audit.postgres_dsn:
            raise ValueError("audit.sink postgres needs audit.postgres_dsn")
        return self

    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    writes: WriteSettings = Field(default_factory=WriteSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    policy_sets: dict[str, Policies] = Field(default_factory=dict)
    evals: EvalSettings = Field(default_factory=EvalSettings)

    def engine_limits(self) -> Limits:
        """The global limits as the engine takes them."""
        return Limits(max_rows=self.limits.max_rows, max_bytes=self.limits.max_bytes, timeout=self.limits.timeout)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key),
                                                                                          Mapping) else value
    return out


def load_settings(project_dir: Path, target: str | None, variables: Mapping[str, Any]) -> Settings:
    """The settings for `target` from `<project>/mxcp.yml`; defaults when there is no file."""
    path = project_dir / SETTINGS_FILE
    if not path.is_file():
        return Settings()
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of settings")
    targets = raw.pop("targets", None) or {}
    if not isinstance(targets, dict):
        raise ConfigError(f"{path}: `targets` must map dbt target names to settings")
    merged = _merge(raw, targets.get(target) or {}) if target else raw
    try:
        return Settings.model_validate(render_jinja(merged, variables))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        from .endpoints import format_validation_error

        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None
