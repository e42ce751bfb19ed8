"""The dbt plugin, run by real dbt commands: the registry artifact, and bad blocks failing `dbt parse`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO, Project, copy_project, env, run


def _yml_nodes(project_dir: Path) -> Iterator[dict[str, Any]]:
    """Every node entry (model, seed, source table, exposure, ...) in the project's property files."""
    for folder in ("models", "seeds", "snapshots", "analyses"):
        for path in (project_dir / folder).rglob("*.yml"):
            doc = yaml.safe_load(path.read_text())
            for section in ("models", "seeds", "snapshots", "analyses", "exposures", "sources"):
                for entry in (doc or {}).get(section) or []:
                    yield from entry.get("tables", []) if section == "sources" else [entry]


def _declared_endpoints(project_dir: Path) -> set[tuple[str, str]]:
    """(kind, name) of every endpoint declared in the project's yml files, read with PyYAML."""
    found = set()
    for node in _yml_nodes(project_dir):
        block = ((node.get("config") or {}).get("meta") or {}).get("mxcp") or {}
        for kind, key in (("tool", "name"), ("resource", "uri"), ("prompt", "name")):
            found |= {(kind, e[key]) for e in block.get(f"{kind}s") or []}
    return found


def test_build_writes_registry_artifact(it_project: Project) -> None:
    artifact = it_project.artifact()
    manifest = json.loads((it_project.path / "target" / "manifest.json").read_text())
    meta = artifact["metadata"]
    assert meta["dbt_schema_version"].endswith("mxcp_registry/v1.json")
    assert meta["invocation_id"] == manifest["metadata"]["invocation_id"]
    assert meta["project_name"] == "dbt_mxcp_integration_tests"
    assert {(e["kind"], e["name"]) for e in artifact["endpoints"]} == _declared_endpoints(it_project.path)
    # The warehouse path as dbt resolved it: relative to dbt's working directory.
    assert artifact["warehouse"]["configured_path"] == "integration.duckdb"
    assert artifact["warehouse"]["path"] == str((it_project.path / "integration.duckdb").resolve())


def test_plugin_compiles_analyses(it_project: Project) -> None:
    artifact = it_project.artifact()
    sql = artifact["compiled"]["analysis.dbt_mxcp_integration_tests.salary_band"]
    # ref() compiled to the relation dbt built, $params left for binding.
    assert '"integration"."main"."people_enriched"' in sql
    assert "$band_min" in sql and "{{" not in sql


def test_relative_duckdb_path_follows_dbt_cwd(fresh_it_project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = fresh_it_project.path
    run(["dbt", "parse", "--project-dir", str(project), "--profiles-dir", str(project)], elsewhere)
    artifact = json.loads((project / "target" / "mxcp_registry.json").read_text())
    assert artifact["warehouse"]["path"] == str(elsewhere / "integration.duckdb")


def _add_tools(project: Project, tools: list[dict[str, Any]]) -> None:
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "people_enriched")
    model["config"]["meta"]["mxcp"]["tools"].extend(tools)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_bad_blocks_fail_dbt_parse_naming_file_node_and_endpoint(fresh_it_project: Project) -> None:
    _add_tools(fresh_it_project, [
        {"name": "typo_key", "descripton": "x"},
        {"name": "bad_type", "parameters": [{"name": "n", "type": "strin"}]},
        {"name": "get_person", "description": "a second get_person"},
        {"name": "undeclared_param", "source": {"code": "select $nope as x"}},
        {"name": "unknown_ref", "source": {"code": "{% raw %}select * from {{ ref('nope') }}{% endraw %}"}},
        {"name": "bad_cel", "policies": {"input": [{"condition": "user.role ==", "action": "deny"}]}},
    ])
    proc = fresh_it_project.dbt("parse", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "Traceback" not in out
    where = "models/properties.yml: model.dbt_mxcp_integration_tests.people_enriched"
    expected = {
        "tool typo_key": "descripton: unknown key",
        "tool bad_type": "parameters.0.type",
        "tool get_person": "duplicate tool name 'get_person'",
        "tool undeclared_param": "$nope",
        "tool unknown_ref": "ref('nope')",
        "tool bad_cel": "not valid CEL",
    }
    for endpoint, fragment in expected.items():
        lines = [ln for ln in out.splitlines() if f"{where}: {endpoint}:" in ln]
        assert lines, f"no error line for {endpoint} in:\n{out}"
        assert fragment in lines[0], lines[0]
    assert not (fresh_it_project.path / "target" / "mxcp_registry.json").exists()
    # dbt wrote manifest.json before the plugin failed: validate reports the same problems.
    proc = fresh_it_project.mxcp("validate", "--no-warehouse", check=False)
    assert proc.returncode == 1
    for endpoint, fragment in expected.items():
        assert f"{where}: {endpoint}: " in proc.stdout and fragment in proc.stdout


def test_prompt_parameter_eaten_by_dbt_render_fails_parse(fresh_it_project: Project) -> None:
    path = fresh_it_project.path / "models" / "exposures.yml"
    text = path.read_text()
    # Without {% raw %}, dbt renders {{ team }} to '' at parse time: the parameter is then unused.
    assert "{% raw %}{{ team }}{% endraw %}" in text
    path.write_text(text.replace("{% raw %}{{ team }}{% endraw %}", "{{ team }}"))
    proc = fresh_it_project.dbt("parse", check=False)
    assert proc.returncode == 2
    assert "prompt team_brief: parameter(s) team are used by no message" in proc.stdout


def test_import_is_cheap_and_safe() -> None:
    code = ("import sys, dbt_mxcp; heavy = {'dbt', 'mcp', 'cel', 'duckdb', 'jinja2', 'pydantic', 'yaml'};"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
    assert out.stdout.strip() == "[]"


def test_dbt_finds_the_plugin_through_pkgutil() -> None:
    # dbt discovers plugins with pkgutil.iter_modules(); a setuptools editable install hides them.
    code = "import pkgutil; print('dbt_mxcp' in {m.name for m in pkgutil.iter_modules()})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "True"
    code = ("import dbt_mxcp; from dbt.plugins.manager import dbtPlugin;"
            "print(issubclass(dbt_mxcp.plugins[0], dbtPlugin))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "True"


def test_shop_example_builds_with_registry(shop_project: Project) -> None:
    artifact = shop_project.artifact()
    assert {(e["kind"], e["name"]) for e in artifact["endpoints"]} == _declared_endpoints(shop_project.path)
    kinds = {e["source_kind"] for e in artifact["endpoints"]}
    assert {"model", "file", "code", "analysis", "table_function", "prompt"} <= kinds


def test_repo_root_is_a_dbt_package_without_stray_nodes(tmp_path: Path) -> None:
    # The package's Python tests/ must not become dbt singular tests of the package.
    project = copy_project(REPO / "integration_tests", tmp_path / "it")
    run(["dbt", "deps", "--profiles-dir", "."], project)
    proc = run(["dbt", "ls", "--profiles-dir", ".", "--resource-type", "all", "--output", "json",
                "--output-keys", "unique_id package_name"], project)
    packages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert not [p for p in packages if p["package_name"] == "dbt_mxcp"]


def test_list_endpoints_macro_works_from_dbt_alone(it_project: Project) -> None:
    proc = it_project.dbt("run-operation", "dbt_mxcp.list_endpoints")
    declared = _declared_endpoints(it_project.path)
    assert f"{len(declared)} endpoint(s) declared" in proc.stdout
    assert "tool legacy_person_lookup (disabled) on model.dbt_mxcp_integration_tests.people_enriched" in proc.stdout
    for kind, name in declared:
        assert f"{kind} {name}" in proc.stdout


def test_plugin_can_be_switched_off(fresh_it_project: Project) -> None:
    proc = run(["dbt", "parse", "--profiles-dir", "."], fresh_it_project.path, extra_env={"DBT_MXCP_PLUGIN": "off"})
    assert proc.returncode == 0
    assert (fresh_it_project.path / "target" / "manifest.json").exists()
    assert not (fresh_it_project.path / "target" / "mxcp_registry.json").exists()


def test_policy_sets_from_settings(fresh_it_project: Project) -> None:
    project = fresh_it_project
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"policy_sets": {"staff_only": {"input": [
        {"condition": "!('staff' in user.groups)", "action": "deny", "reason": "Staff only"}]}}}))
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "people_enriched")
    tool = next(t for t in model["config"]["meta"]["mxcp"]["tools"] if t["name"] == "get_person")
    tool["policies"] = {"use": ["staff_only"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    project.dbt("build")
    denied = project.mxcp("run", "tool", "get_person", "--param", "id=1", check=False)
    assert denied.returncode == 1 and "Staff only" in denied.stderr
    allowed = project.mxcp("run", "tool", "get_person", "--param", "id=1", "--user", '{"groups": ["staff"]}')
    assert json.loads(allowed.stdout)["name"] == "Ann"
    tool["policies"] = {"use": ["no_such_set"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = project.dbt("parse", check=False)
    assert proc.returncode == 2 and "policies.use names no policy set 'no_such_set'" in proc.stdout
