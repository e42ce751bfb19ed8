"""mxcp.yml: defaults, per-target overrides, env_var rendering, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbt_mxcp.errors import ConfigError
from dbt_mxcp.settings import load_settings


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
    ("writes: {enabled: \"{{ env_var('MXCP_NOT_SET') }}\"}\n", "MXCP_NOT_SET is not set"),
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
