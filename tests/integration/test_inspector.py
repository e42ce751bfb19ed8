"""The official MCP Inspector CLI (npm `@modelcontextprotocol/inspector-cli`, on node) against
`dbt-mxcp serve`, over stdio and streamable HTTP."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import BIN, REPO, Project, env
from tests.integration.test_server import http_server

INSPECTOR = "@modelcontextprotocol/inspector-cli@1.0.3"


@pytest.fixture(scope="session")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Inspector CLI installed from the npm registry into a temp folder; its build/ folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the MCP Inspector test (Debian: apt-get install nodejs npm)"
    prefix = tmp_path_factory.mktemp("inspector")
    proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(prefix),
                           INSPECTOR], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"npm install {INSPECTOR} failed:\n{proc.stderr}"
    yield prefix / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build"


def _inspect(build: Path, target: list[str], *args: str) -> dict[str, object]:
    # The CLI finds its own package.json relative to the working directory: run it from build/.
    proc = subprocess.run(["node", "index.js", *target, *args], cwd=build, capture_output=True, text=True,
                          timeout=120, env=env())
    assert proc.returncode == 0, f"inspector-cli {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_inspector_over_stdio(inspector: Path, it_project: Project) -> None:
    target = [str(BIN / "dbt-mxcp"), "serve", "--project-dir", str(it_project.path), "--profiles-dir",
              str(it_project.path)]
    tools = _inspect(inspector, target, "--method", "tools/list")["tools"]
    assert isinstance(tools, list)
    listed = json.loads(it_project.mxcp("list", "--output", "json").stdout)
    hidden = {"add_note", "delete_notes", "salary_band"}  # writes are off; salary_band is for 'hr' only
    served = {e["name"] for e in listed if e["kind"] == "tool" and e["enabled"]} - hidden
    assert {t["name"] for t in tools} == served
    result = _inspect(inspector, target, "--method", "tools/call", "--tool-name", "get_person", "--tool-arg", "id=4")
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        carla = next(r for r in csv.DictReader(fh) if r["id"] == "4")
    assert result["isError"] is False
    assert result["structuredContent"]["name"] == carla["name"]  # type: ignore[index]


def test_inspector_over_http(inspector: Path, it_project: Project) -> None:
    with http_server(it_project) as base:
        target = [f"{base}/mcp", "--transport", "http"]
        templates = _inspect(inspector, target, "--method", "resources/templates/list")["resourceTemplates"]
        assert [t["uriTemplate"] for t in templates] == ["people://{id}"]  # type: ignore[union-attr,index]
        prompt = _inspect(inspector, target, "--method", "prompts/get", "--prompt-name", "team_brief",
                          "--prompt-args", "team=hr")
        texts = [m["content"]["text"] for m in prompt["messages"]]  # type: ignore[union-attr,index]
        assert any("the hr team" in t for t in texts)
