"""Canary secrets planted in a profile, in request headers and in sensitive arguments never show up
in an error message, the server's log or the audit log."""

from __future__ import annotations

import subprocess

import httpx2
import yaml

from dbt_mxcp.auth.api_keys import hash_key
from tests.helpers import BIN, Project, env, free_port, wait_for_http

PROFILE_CANARY = "pr0file-canary-91c2"
HEADER_CANARY = "mxcp_header-canary-4d7e"


def test_a_secret_in_the_profile_stays_out_of_errors(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    profiles = yaml.safe_load((project.path / "profiles.yml").read_text())
    dev = profiles["integration_tests"]["outputs"]["dev"]
    dev["settings"] = {"no_such_duckdb_setting": "{{ env_var('DBT_ENV_SECRET_CANARY') }}"}
    (project.path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    proc = project.mxcp("run", "tool", "get_person", "--param", "id=1", check=False,
                        extra_env={"DBT_ENV_SECRET_CANARY": PROFILE_CANARY})
    assert proc.returncode != 0
    assert "no_such_duckdb_setting" in proc.stderr  # the error still says what is wrong
    assert PROFILE_CANARY not in proc.stdout + proc.stderr


def test_a_rejected_credential_stays_out_of_the_logs(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"auth": {"type": "api_key", "api_keys": [
        {"name": "real", "sha256": hash_key("mxcp_real-key"), "user": {"role": "analyst"}}]}}))
    port = free_port()
    proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--transport", "http", "--port", str(port),
                             "--project-dir", str(project.path), "--profiles-dir", str(project.path)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        with httpx2.Client() as http:
            for headers in ({"Authorization": f"Bearer {HEADER_CANARY}"}, {"X-API-Key": HEADER_CANARY}):
                answer = http.post(f"http://127.0.0.1:{port}/mcp", json=body, headers=headers)
                assert answer.status_code == 401 and HEADER_CANARY not in answer.text
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    logs = "".join(p.read_text() for p in (project.path / "logs").iterdir() if p.suffix == ".jsonl")
    assert HEADER_CANARY not in out + err + logs
    assert "refused a credential" in err  # the refusal itself is logged
