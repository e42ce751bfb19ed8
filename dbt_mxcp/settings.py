"""`mxcp.yml` at the dbt project root: server settings, with per-target overrides.

```yaml
server: {name: Shop data, instructions: Answer questions about orders.}
limits: {max_rows: 1000, max_bytes: 10000000, timeout: 30}
writes: {enabled: true, path: "{{ env_var('MXCP_WRITES', 'target/mxcp_writes.duckdb') }}"}
targets:            # keyed by dbt target, like profiles.yml; merged over the settings above
  prod:
    limits: {max_rows: 200}
```
Strings may use ``{{ env_var('X', 'default') }}`` and ``{{ var('x') }}``; secret fields also take references
(``env:NAME``, ``file:PATH``, ``vault:MOUNT/PATH#KEY``). Unknown keys are errors. Without a project file,
``$DBT_MXCP_SETTINGS`` or ``~/.dbt/mxcp.yml`` is read instead (see docs/settings.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator

from .endpoints import Policies
from .engine import Limits
from .errors import ConfigError
from .project import read_yaml, render_jinja

SETTINGS_FILE = "mxcp.yml"
SETTINGS_ENV = "DBT_MXCP_SETTINGS"  # names the settings file explicitly, like DBT_PROFILES_DIR for profiles.yml
REFERENCE_PREFIXES = ("env:", "file:", "vault:")
_SECRET: dict[str, Any] = {"x-secret": True}  # marks the fields that take references (and tells editors via the schema)


def _secret() -> Any:
    """A secret-capable field: takes `env:`/`file:`/`vault:` references and is left out of repr (logs)."""
    return Field(default=None, repr=False, json_schema_extra=_SECRET,
                 description="A secret: write env:NAME, file:PATH or vault:MOUNT/PATH#KEY rather than the value.")


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
    postgres_dsn: str | None = _secret()  # postgres: e.g. "env:MXCP_AUDIT_DSN"
    table: str = "mxcp_audit"  # duckdb/postgres: the table, created if missing
    strict: bool = True
    fsync: Literal["every", "interval", "os"] = "interval"
    fsync_interval: float = Field(default=1.0, gt=0)
    max_bytes: int = Field(default=100_000_000, ge=1000)
    backups: int = Field(default=10, ge=1)
    hmac_key: str | None = _secret()  # default: a random key in mxcp_audit.key beside the log
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
    client_secret: str | None = _secret()
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
    client_secret: str | None = _secret()  # e.g. "env:GITHUB_CLIENT_SECRET"
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
    api_key: SecretStr | None = _secret()  # default $ANTHROPIC_API_KEY / $OPENAI_API_KEY; never printed
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)  # None: the provider's default
    timeout: float = Field(default=120.0, gt=0)  # seconds per LLM request
    path: str = "evals"  # the folder of eval suites (*.yml), relative to the project


class TelemetrySettings(_Strict):
    """Metrics (Prometheus, OTLP) and OpenTelemetry traces of served calls (docs/observability.md); off by default."""

    metrics: bool = False  # serve GET /metrics on the HTTP transport (unauthenticated, like /healthz)
    traces: bool = False  # a span per call; needs the `otel` extra
    otlp_metrics: bool = False  # export the same metrics over OTLP/HTTP (to /v1/metrics); needs the `otel` extra
    otlp_metrics_interval: float | None = Field(default=None, gt=0)  # seconds between exports; default 60 or $OTEL_*
    otlp_endpoint: str | None = None  # OTLP/HTTP base URL, e.g. http://localhost:4318; default $OTEL_EXPORTER_OTLP_*
    service_name: str = "dbt-mxcp"  # the traces' and OTLP metrics' service.name


class Settings(_Strict):
    """All of `mxcp.yml` for one target."""

    # Sections whose values could not be rendered or resolved (an unset variable, a missing secret):
    # reading one raises its error, so only the commands that need the section fail.
    _deferred: dict[str, str] = PrivateAttr(default_factory=dict)

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute of Settings
        def __getattr__(self, name: str) -> Any:
            deferred = (self.__pydantic_private__ or {}).get("_deferred") or {}
            if name in deferred:
                raise ConfigError(deferred[name])
            return super().__getattr__(name)

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
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    def engine_limits(self) -> Limits:
        """The global limits as the engine takes them."""
        return Limits(max_rows=self.limits.max_rows, max_bytes=self.limits.max_bytes, timeout=self.limits.timeout)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key),
                                                                                          Mapping) else value
    return out


def settings_path(project_dir: Path) -> Path | None:
    """The settings file in use: $DBT_MXCP_SETTINGS, else the project's mxcp.yml, else ~/.dbt/mxcp.yml."""
    # Found by precedence, never merged, as dbt finds profiles.yml: one file holds all the settings.
    explicit = os.environ.get("DBT_MXCP_SETTINGS")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{SETTINGS_ENV} names {path}, which is not a file")
        return path
    for path in (project_dir / SETTINGS_FILE, Path.home() / ".dbt" / SETTINGS_FILE):
        if path.is_file():
            return path
    return None


def load_settings(project_dir: Path, target: str | None, variables: Mapping[str, Any]) -> Settings:
    """The settings for `target` from the settings file (see `settings_path`); defaults when there is none."""
    path = settings_path(project_dir)
    if path is None:
        return Settings()
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of settings")
    targets = raw.pop("targets", None) or {}
    if not isinstance(targets, dict):
        raise ConfigError(f"{path}: `targets` must map dbt target names to settings")
    merged = _merge(raw, targets.get(target) or {}) if target else raw
    resolver = _Resolver(project_dir, variables)
    data: dict[str, Any] = {}
    deferred: dict[str, str] = {}
    for section, value in merged.items():
        try:
            data[section] = resolver.resolve(value, (str(section),))
        except ConfigError as exc:
            deferred[str(section)] = f"{path}: {exc}"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        from .endpoints import format_validation_error

        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None
    for section in deferred:
        if section not in Settings.model_fields:
            raise ConfigError(f"{path}: {section}: unknown key (see docs/settings.md for the allowed keys)")
        del settings.__dict__[section]  # validated as its default, which must not be used: reading it raises
    settings._deferred.update(deferred)
    return settings


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = set()
    for name, field in model.model_fields.items():
        if field.json_schema_extra == _SECRET:
            out.add((*prefix, name))
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, _Strict):
                out |= _secret_paths(kind, (*prefix, name))
    return out


# References are resolved only in these fields, so a literal such as a server name "env: prod" stays as written.
SECRET_FIELDS = frozenset(".".join(p) for p in _secret_paths(Settings))


class _Resolver:
    """Renders Jinja in every string and resolves references in secret fields, naming the key on failure."""

    def __init__(self, project_dir: Path, variables: Mapping[str, Any]) -> None:
        self.project_dir = project_dir
        self.variables = variables
        self.vault_cache: dict[tuple[str, str], Mapping[str, Any]] = {}

    def resolve(self, value: Any, path: tuple[str, ...]) -> Any:
        """`value` (at key `path`) rendered, with the references in secret fields replaced by their secrets."""
        if isinstance(value, dict):
            return {k: self.resolve(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, (*path, str(i))) for i, v in enumerate(value)]
        key = ".".join(path)
        try:
            value = render_jinja(value, self.variables)
            if key in SECRET_FIELDS and isinstance(value, str) and value.startswith(REFERENCE_PREFIXES):
                return self.reference(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        return value

    def reference(self, ref: str) -> str:
        """The secret a reference points to; errors name the reference, never a value."""
        kind, _, name = ref.partition(":")
        if kind == "env":
            if name not in os.environ:
                raise ConfigError(f"environment variable {name} is not set")
            return os.environ[name]
        if kind == "file":
            file = (self.project_dir / Path(name).expanduser()).resolve()
            try:
                return file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {file}: {exc.strerror}") from None
        return self.vault(name)

    def vault(self, name: str) -> str:
        """The secret a `vault:MOUNT/PATH#KEY` reference points to (each secret read once per load)."""
        location, _, key = name.partition("#")
        mount, _, secret = location.partition("/")
        if not (mount and secret and key):
            raise ConfigError(f"vault:{name} must look like vault:MOUNT/PATH#KEY (KV version 2)")
        if (mount, secret) not in self.vault_cache:
            self.vault_cache[(mount, secret)] = _read_vault(mount, secret)
        data = self.vault_cache[(mount, secret)]
        if key not in data:
            raise ConfigError(f"Vault secret {mount}/{secret} has no key {key}")
        return str(data[key])


def _read_vault(mount: str, secret: str) -> Mapping[str, Any]:
    try:
        import hvac
        import hvac.exceptions
    except ImportError:
        raise ConfigError("vault: references need hvac: pip install 'dbt-mxcp[vault]'") from None
    if not os.environ.get("VAULT_ADDR"):
        raise ConfigError(f"environment variable VAULT_ADDR is not set (needed to read vault:{mount}/{secret})")
    client = hvac.Client()  # reads VAULT_ADDR, VAULT_TOKEN (or ~/.vault-token) and VAULT_NAMESPACE itself
    if not client.token:
        raise ConfigError(f"environment variable VAULT_TOKEN is not set (needed to read vault:{mount}/{secret})")
    try:
        response = client.secrets.kv.v2.read_secret_version(path=secret, mount_point=mount,
                                                            raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        raise ConfigError(f"Vault has no secret {secret} in KV mount {mount}") from None
    except hvac.exceptions.Forbidden:
        raise ConfigError(f"Vault refused to read {mount}/{secret}: check VAULT_TOKEN's policy") from None
    except Exception as exc:  # hvac and requests raise many kinds; their messages carry no secret values
        raise ConfigError(f"cannot read {mount}/{secret} from Vault at {client.url}: {exc}") from None
    data: Mapping[str, Any] = response["data"]["data"]
    return data


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of mxcp.yml for editors (docs/mxcp.schema.json), `targets` included."""
    schema = Settings.model_json_schema()
    for model in [schema, *schema.get("$defs", {}).values()]:
        for name, prop in model.get("properties", {}).items():
            model["properties"][name] = _or_template(prop)
    # A target's section overrides some keys only, so nothing in it is required.
    partial = json.loads(json.dumps(schema).replace('"#/$defs/', '"#/$defs/Partial'))
    for model in [partial, *partial.get("$defs", {}).values()]:
        model.pop("required", None)
    schema["$defs"].update({f"Partial{name}": d for name, d in partial.get("$defs", {}).items()})
    schema["$defs"]["PartialSettings"] = {"type": "object", "properties": partial["properties"],
                                          "additionalProperties": False}
    schema["properties"]["targets"] = {
        "description": "Overrides for one dbt target, merged key by key over the settings above.",
        "type": "object", "additionalProperties": {"$ref": "#/$defs/PartialSettings"}}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dbt-mxcp settings (mxcp.yml)"
    return schema


def _or_template(prop: dict[str, Any]) -> dict[str, Any]:
    # Any value may be written as "{{ env_var(...) }}", which an editor must not flag as the wrong type.
    choices = [prop, *prop.get("anyOf", [])]
    if any(p.get("type") == "string" and "pattern" not in p and "enum" not in p for p in choices):
        return prop  # a plain string already takes a template
    outer = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
    return {**outer, "anyOf": [prop, {"type": "string", "pattern": "\\{\\{"}]}


if __name__ == "__main__":  # python -m dbt_mxcp.settings > docs/mxcp.schema.json
    print(json.dumps(settings_schema(), indent=2))
