"""mxcp.yml: defaults, per-target overrides, env_var rendering, secret references, the fallback file, the schema."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dbt_mxcp.errors import ConfigError
from dbt_mxcp.settings import load_settings, settings_schema

CANARY = "canary-s3cr3t-7f1d"  # a secret value that must never appear in an error or a repr


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, "dev", {})
    assert settings.limits.max_rows == 1000 and settings.writes.enabled is False


def test_target_section_merges_over_the_top_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXCP_TEST_ROWS", "250")
    (tmp_path / "mxcp.yml").write_text(
        "limits: {max_rows: \"{{ env_var('MXCP_TEST_ROWS') }}\", timeout: 5}\n"
        "server: {name: \"{{ var('label', 'Shop') }}\"}\n"
        "targets:\n  prod:\n    limits: {timeout: 2}\n")
    dev = load_settings(tmp_path, "dev", {})
    prod = load_settings(tmp_path, "prod", {"label": "Prod shop"})
    assert (dev.limits.max_rows, dev.limits.timeout, dev.server.name) == (250, 5, "Shop")
    assert (prod.limits.max_rows, prod.limits.timeout, prod.server.name) == (250, 2, "Prod shop")
    assert prod.engine_limits().timeout == 2


@pytest.mark.parametrize(("text", "fragment"), [
    ("limits: {max_row: 5}\n", "limits.max_row: unknown key"),
    ("limits: {timeout: -1}\n", "limits.timeout"),
    ("- a list\n", "must be a mapping"),
    ("auth: {type: login}\n", "auth.type login needs a `login` section"),
    ("auth: {type: login, login: {provider: github, client_id: x}}\n", "anyone can log in with github; set `allow`"),
    ("auth: {type: login, login: {provider: google, client_id: x}}\n", "anyone can log in with google"),
    ("auth: {type: login, login: {provider: oidc, client_id: x}}\n", "provider oidc needs `issuer`"),
    ("auth: {type: login, login: {provider: keycloak, client_id: x, realm: r}}\n", "needs `server_url` and `realm`"),
    ("auth: {type: login, login: {provider: okta, client_id: x}}\n", "auth.login.provider"),
])
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "mxcp.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, "dev", {})
    assert fragment in str(info.value) and "mxcp.yml" in str(info.value)


def test_login_for_own_provider_needs_no_allow(tmp_path: Path) -> None:
    (tmp_path / "mxcp.yml").write_text("auth: {type: login, login: {provider: keycloak, client_id: mcp, "
                                       "server_url: 'https://sso.example.com', realm: data}}\n")
    login = load_settings(tmp_path, "dev", {}).auth.login
    assert login is not None and login.allow is None and login.access_token_ttl == 3600


def test_env_var_defaults_and_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXCP_T_UNSET", raising=False)
    monkeypatch.setenv("MXCP_T_GH", CANARY)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dsn").write_text("postgresql://u:p@db/audit\n")
    (tmp_path / "mxcp.yml").write_text(
        "writes: {path: \"{{ env_var('MXCP_T_UNSET', 'w.duckdb') }}\"}\n"
        "server: {name: 'env:prod'}\n"  # not a secret field: a literal, never a reference
        "audit: {sink: postgres, postgres_dsn: 'file:secrets/dsn', hmac_key: \"{{ 'env:' ~ 'MXCP_T_GH' }}\"}\n"
        "auth: {type: login, login: {provider: keycloak, client_id: mcp, client_secret: 'env:MXCP_T_GH', "
        "server_url: 'https://sso.example.com', realm: data}}\n")
    settings = load_settings(tmp_path, "dev", {})
    assert settings.writes.path == "w.duckdb" and settings.server.name == "env:prod"
    assert settings.audit.postgres_dsn == "postgresql://u:p@db/audit" and settings.audit.hmac_key == CANARY
    assert settings.auth.login is not None and settings.auth.login.client_secret == CANARY
    assert CANARY not in repr(settings)  # secret fields are left out of repr, so out of logs


def test_an_unset_variable_fails_only_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXCP_T_GH_SECRET", raising=False)
    monkeypatch.delenv("MXCP_NOT_SET", raising=False)
    monkeypatch.setenv("MXCP_T_OTHER", CANARY)
    (tmp_path / "mxcp.yml").write_text(
        "limits: {max_rows: 7}\n"
        "writes: {enabled: \"{{ env_var('MXCP_NOT_SET') }}\"}\n"
        "evals: {api_key: 'env:MXCP_T_OTHER'}\n"
        "auth: {type: login, login: {provider: github, client_id: x, allow: 'true', "
        "client_secret: 'env:MXCP_T_GH_SECRET'}}\n")
    settings = load_settings(tmp_path, "dev", {})  # what `list` or `dbt parse` needs still loads
    assert settings.limits.max_rows == 7 and settings.policy_sets == {}
    with pytest.raises(ConfigError) as info:
        _ = settings.auth  # what `serve` needs fails, naming the key and the variable
    assert "mxcp.yml: auth.login.client_secret: environment variable MXCP_T_GH_SECRET is not set" in str(info.value)
    with pytest.raises(ConfigError, match=r"writes\.enabled: env var MXCP_NOT_SET is not set"):
        _ = settings.writes
    assert settings.evals.api_key is not None and settings.evals.api_key.get_secret_value() == CANARY


@pytest.mark.parametrize(("value", "fragment"), [
    ("file:missing/secret", "auth.oauth.client_secret: cannot read secret file"),
    ("vault:secret", "must look like vault:MOUNT/PATH#KEY"),
])
def test_bad_references_name_the_reference(tmp_path: Path, value: str, fragment: str) -> None:
    (tmp_path / "mxcp.yml").write_text(f"auth: {{oauth: {{issuer: i, audience: a, introspection_endpoint: e, "
                                       f"client_secret: '{value}'}}}}\n")
    with pytest.raises(ConfigError, match=fragment):
        _ = load_settings(tmp_path, "dev", {}).auth


@pytest.mark.parametrize("text", [
    # a secret-bearing value that fails validation: the error names the key, never the value
    "audit: {hmac_key: \"{{ env_var('MXCP_T_CANARY') }}\"}\n",
    "auth: {type: login, login: {provider: okta, client_id: x, client_secret: 'env:MXCP_T_CANARY'}}\n",
    "evals: {api_key: \"{{ env_var('MXCP_T_CANARY') }}\", max_tokens: 0}\n",
])
def test_validation_errors_never_echo_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    digits = "73829104655"  # a template renders it to a number, which is not a valid string
    monkeypatch.setenv("MXCP_T_CANARY", digits)
    (tmp_path / "mxcp.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, "dev", {})
    assert digits not in str(info.value) and info.value.__cause__ is None


def test_fallback_file_in_home_and_explicit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".dbt").mkdir(parents=True)
    project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DBT_MXCP_SETTINGS", raising=False)
    (home / ".dbt" / "mxcp.yml").write_text("limits: {max_rows: 5, timeout: 3}\n"
                                            "targets: {prod: {limits: {timeout: 1}}}\n")
    assert load_settings(project, "dev", {}).limits.max_rows == 5
    assert load_settings(project, "prod", {}).limits.timeout == 1
    (project / "mxcp.yml").write_text("limits: {timeout: 9}\n")
    project_wins = load_settings(project, "dev", {}).limits  # wholly: found by precedence, not merged
    assert (project_wins.max_rows, project_wins.timeout) == (1000, 9)
    explicit = tmp_path / "ci.yml"
    explicit.write_text("limits: {max_rows: 2}\n")
    monkeypatch.setenv("DBT_MXCP_SETTINGS", str(explicit))
    assert load_settings(project, "dev", {}).limits.max_rows == 2
    monkeypatch.setenv("DBT_MXCP_SETTINGS", str(tmp_path / "nope.yml"))
    with pytest.raises(ConfigError, match=r"DBT_MXCP_SETTINGS names .*nope\.yml, which is not a file"):
        load_settings(project, "dev", {})


def test_committed_schema_is_up_to_date() -> None:
    committed = Path(__file__).resolve().parents[2] / "docs" / "mxcp.schema.json"
    assert json.loads(committed.read_text()) == settings_schema(), \
        "docs/mxcp.schema.json is out of date: python -m dbt_mxcp.settings > docs/mxcp.schema.json"


@pytest.fixture()
def vault_standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A stand-in for a Vault server (none installs offline): only the KV v2 read API, on 127.0.0.1."""
    secrets = {"/v1/secret/data/mxcp/github": {"client_secret": CANARY}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if self.headers.get("X-Vault-Token") != "dev-token":
                status, body = 403, {"errors": ["permission denied"]}
            elif path in secrets:
                status, body = 200, {"data": {"data": secrets[path], "metadata": {"version": 1, "deletion_time": ""}}}
            else:
                status, body = 404, {"errors": []}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("VAULT_TOKEN", "dev-token")
    yield "secret"
    server.shutdown()
    thread.join()


def _login_with(tmp_path: Path, reference: str) -> Path:
    (tmp_path / "mxcp.yml").write_text("auth: {type: login, login: {provider: github, client_id: x, allow: 'true', "
                                       f"client_secret: '{reference}'}}}}\n")
    return tmp_path


def test_vault_reference_reads_kv_v2(tmp_path: Path, vault_standin: str) -> None:
    project = _login_with(tmp_path, f"vault:{vault_standin}/mxcp/github#client_secret")
    login = load_settings(project, "dev", {}).auth.login
    assert login is not None and login.client_secret == CANARY


@pytest.mark.parametrize(("reference", "token", "fragment"), [
    ("vault:secret/mxcp/github#nope", "dev-token", "Vault secret secret/mxcp/github has no key nope"),
    ("vault:secret/mxcp/gitlab#client_secret", "dev-token", "Vault has no secret mxcp/gitlab in KV mount secret"),
    ("vault:secret/mxcp/github#client_secret", "wrong", "Vault refused to read secret/mxcp/github"),
    ("vault:secret/mxcp/github#client_secret", "", "VAULT_TOKEN is not set"),
])
def test_vault_errors_name_the_reference(tmp_path: Path, vault_standin: str, monkeypatch: pytest.MonkeyPatch,
                                         reference: str, token: str, fragment: str) -> None:
    monkeypatch.setenv("VAULT_TOKEN", token)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token to fall back on
    settings = load_settings(_login_with(tmp_path, reference), "dev", {})
    with pytest.raises(ConfigError) as info:
        _ = settings.auth
    assert fragment in str(info.value) and "auth.login.client_secret" in str(info.value)
    assert CANARY not in str(info.value)
