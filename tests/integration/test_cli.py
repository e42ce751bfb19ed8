"""`dbt-mxcp list`, `validate` and `run` against real dbt builds; expectations computed from the seed CSVs."""

from __future__ import annotations

import csv
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import BIN, REPO, Project, run


def _people() -> list[dict[str, str]]:
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        return list(csv.DictReader(fh))


def _floors() -> dict[str, int]:
    with (REPO / "integration_tests" / "seeds" / "teams.csv").open() as fh:
        return {r["team"]: int(r["floor"]) for r in csv.DictReader(fh)}


def _exact(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


# ---- list ----------------------------------------------------------------------------------------

def test_list_json_shows_every_endpoint_with_host_and_source(it_project: Project) -> None:
    listed = json.loads(it_project.mxcp("list", "--output", "json").stdout)
    by_name = {e["name"]: e for e in listed}
    assert by_name["get_person"]["node"] == "model.dbt_mxcp_integration_tests.people_enriched"
    assert by_name["get_person"]["source_kind"] == "model"
    assert by_name["search_people"]["source_kind"] == "file"
    assert by_name["people_joined_since"]["source_kind"] == "code"
    assert by_name["salary_band"]["source_kind"] == "analysis"
    assert by_name["people_in_team"]["source_kind"] == "table_function"
    assert by_name["get_event"]["resource_type"] == "source"
    assert by_name["get_person_history"]["resource_type"] == "snapshot"
    assert by_name["team_brief"]["kind"] == "prompt"
    assert by_name["people://{id}"]["kind"] == "resource"
    assert by_name["legacy_person_lookup"]["enabled"] is False


def test_list_text_marks_disabled(it_project: Project) -> None:
    out = it_project.mxcp("list").stdout
    assert "legacy_person_lookup (disabled)" in out
    assert "get_person " in out


# ---- run: every host and SQL source ---------------------------------------------------------------

def test_output_cut_short_by_the_reader_is_not_an_error(it_project: Project) -> None:
    # `| head -c 0` exits before dbt-mxcp writes, so its write meets a closed pipe.
    proc = run(["bash", "-c", f"'{BIN / 'dbt-mxcp'}' list --profiles-dir . | head -c 0; exit ${{PIPESTATUS[0]}}"],
               it_project.path, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ""


def test_run_model_backed_object(it_project: Project) -> None:
    row = next(p for p in _people() if p["id"] == "3")
    got = _exact(it_project.mxcp("run", "tool", "get_person", "--param", "id=3").stdout)
    assert got["name"] == row["name"] and got["team"] == row["team"]
    assert got["salary"] == Decimal(row["salary"])  # exact decimal, not a float
    assert got["joined"] == row["joined"]  # DATE as YYYY-MM-DD
    assert got["floor"] == _floors()[row["team"]]
    assert got["active"] is (row["active"] == "true")


def test_run_file_source_with_policy_mask_and_defaults(it_project: Project) -> None:
    expected = [p for p in _people() if "ann" in p["name"].lower()]
    as_admin = it_project.call("tool", "search_people", "name_query=ann", user={"role": "admin"})
    assert [r["id"] for r in as_admin] == sorted(int(p["id"]) for p in expected)
    assert {r["email"] for r in as_admin} == {p["email"] for p in expected}
    anonymous = it_project.call("tool", "search_people", "name_query=ann")
    assert {r["email"] for r in anonymous} == {"****"}
    in_teams = it_project.call("tool", "search_people", "name_query=a", 'teams=["sales","ops"]', "active_only=true",
                               user={"role": "admin"})
    want = [int(p["id"]) for p in _people()
            if "a" in p["name"].lower() and p["team"] in ("sales", "ops") and p["active"] == "true"]
    assert [r["id"] for r in in_teams] == want


def test_run_inline_code_with_date_parameter(it_project: Project) -> None:
    got = it_project.call("tool", "people_joined_since", "since=2023-01-01")
    want = sorted((p["joined"], int(p["id"])) for p in _people() if p["joined"] >= "2023-01-01")
    assert [(r["joined"], r["id"]) for r in got] == want


def test_run_this_and_env_var(it_project: Project) -> None:
    got = it_project.call("tool", "greet_person", "id=1")
    assert got == {"id": 1, "greeting": "hello, Ann!"}
    proc = it_project.mxcp("run", "tool", "greet_person", "--param", "id=1",
                           extra_env={"DBT_MXCP_IT_GREETING": "bonjour"})
    assert json.loads(proc.stdout)["greeting"] == "bonjour, Ann!"


def test_run_scalar_return(it_project: Project) -> None:
    got = it_project.call("tool", "count_people", "team=sales", "include_inactive=false")
    assert got == sum(1 for p in _people() if p["team"] == "sales" and p["active"] == "true")


def test_run_table_function(it_project: Project) -> None:
    got = it_project.call("tool", "people_in_team", "p_team=hr")
    assert sorted(r["name"] for r in got) == sorted(p["name"] for p in _people() if p["team"] == "hr")


def test_run_analysis_with_input_policy(it_project: Project) -> None:
    denied = it_project.mxcp("run", "tool", "salary_band", "--param", "band_min=0", check=False)
    assert denied.returncode == 1
    assert "HR only" in denied.stderr
    got = _exact(it_project.mxcp("run", "tool", "salary_band", "--param", "band_min=4500", "--param",
                                 "band_max=5000", "--user", '{"groups": ["hr"]}').stdout)
    want = sorted(((Decimal(p["salary"]), p["name"]) for p in _people()
                   if Decimal("4500") <= Decimal(p["salary"]) < Decimal("5000")), reverse=True)
    assert [(r["salary"], r["name"]) for r in got] == want


def test_run_source_and_snapshot_hosts(it_project: Project) -> None:
    event = it_project.call("tool", "get_event", "event_id=1")
    assert event["event_id"] == 1
    history = it_project.call("tool", "get_person_history", "id=2")
    assert len(history) == 1 and history[0]["name"] == "Anna"


def test_run_exposure_tool_with_array_parameter(it_project: Project) -> None:
    got = it_project.call("tool", "team_overview", 'teams=["hr","eng"]')
    members = {t: sorted(p["name"] for p in _people() if p["team"] == t) for t in ("eng", "hr")}
    assert [(r["team"], r["members"]) for r in got] == [("eng", members["eng"]), ("hr", members["hr"])]


def test_run_resource_template_and_sensitive_filter(it_project: Project) -> None:
    row = next(p for p in _people() if p["id"] == "1")
    anonymous = it_project.call("resource", "people://1")
    assert "email" not in anonymous and anonymous["name"] == row["name"]
    admin = it_project.call("resource", "people://1", user={"role": "admin"})
    assert admin["email"] == row["email"]
    missing = it_project.mxcp("run", "resource", "people://999", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    teams = it_project.call("resource", "teams://all")
    assert {t["team"]: t["floor"] for t in teams} == _floors()


def test_run_prompt(it_project: Project) -> None:
    messages = it_project.call("prompt", "team_brief", "team=sales")
    assert messages[0]["role"] == "system"
    assert messages[1] == {"role": "user", "content": "Write a three-line brief on the sales team: headcount, "
                                                      "average salary, members."}


@pytest.mark.parametrize(("args", "fragment"), [
    (["tool", "get_person", "--param", "id=abc"], "parameter 'id' must be an integer, got 'abc'"),
    (["tool", "get_person", "--param", "id=0"], "'id' must be >= 1"),
    (["tool", "get_person"], "missing required parameter 'id'"),
    (["tool", "get_person", "--param", "nope=1"], "unknown parameter 'nope'"),
    (["tool", "search_people", "--param", "name_query=a", "--param", "limit=1000"], "'limit' must be <= 100"),
    (["tool", "people_joined_since", "--param", "since=yesterday"], "'since' must be a valid date"),
    (["tool", "count_people", "--param", "team=marketing"], "'team' must be one of"),
    (["tool", "team_overview", "--param", "teams=[]"], "'teams' must have at least 1 items"),
    (["tool", "get_person", "--param", "id=999"], "no row found"),
    (["tool", "legacy_person_lookup", "--param", "name=x"], "unknown tool 'legacy_person_lookup'"),
    (["tool", "search_people", "--param", "name_query=' OR 1=1 --"], None),
])
def test_run_bad_arguments_name_the_parameter_and_rule(it_project: Project, args: list[str],
                                                        fragment: str | None) -> None:
    proc = it_project.mxcp("run", *args, check=False)
    assert "Traceback" not in proc.stderr
    if fragment is None:  # an injection string is just a value that matches nothing
        assert proc.returncode == 0 and json.loads(proc.stdout) == []
        return
    assert proc.returncode == 1, proc.stdout
    assert fragment in proc.stderr


def test_run_bad_user_json_is_a_usage_error(it_project: Project) -> None:
    proc = it_project.mxcp("run", "tool", "get_person", "--param", "id=1", "--user", "{nope", check=False)
    assert proc.returncode == 2 and "--user must be a JSON object" in proc.stderr


# ---- validate ------------------------------------------------------------------------------------

def test_validate_passes_on_built_project(it_project: Project) -> None:
    proc = it_project.mxcp("validate")
    listed = json.loads(it_project.mxcp("list", "--output", "json").stdout)
    enabled = sum(1 for e in listed if e["enabled"])
    assert f"Validated {enabled} endpoint(s): all OK" in proc.stdout
    # Write endpoints are planned only where writes are enabled; the warning says so.
    assert "tool add_note: not checked: writes are disabled in mxcp.yml" in proc.stdout


def test_validate_finds_return_type_mismatch_and_stale_manifest(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "people_enriched")
    tool = next(t for t in model["config"]["meta"]["mxcp"]["tools"] if t["name"] == "people_joined_since")
    tool["return"]["items"]["properties"]["nickname"] = {"type": "string"}
    tool["return"]["items"]["properties"]["joined"] = {"type": "integer"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    stale = project.mxcp("validate")
    assert "older than models/properties.yml" in stale.stdout  # the manifest predates the edit
    project.dbt("parse")
    proc = project.mxcp("validate", check=False)
    assert proc.returncode == 1
    assert "people_joined_since: the return type declares 'nickname' but the SQL returns no such column" in proc.stdout
    assert "column 'joined' is DATE (string) in the warehouse but the return type says integer" in proc.stdout


def test_validate_reports_sql_that_does_not_prepare(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    (project.path / "endpoints" / "count_people.sql").write_text(
        "select count(*) as n from {{ ref('people_enriched') }} where no_such_column = $team "
        "and $include_inactive")
    proc = project.mxcp("validate", check=False)
    assert proc.returncode == 1
    assert "tool count_people: SQL does not prepare against the warehouse" in proc.stdout
    assert "no_such_column" in proc.stdout


def test_missing_manifest_says_run_dbt_parse(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: p\nprofile: p\nconfig-version: 2\n")
    proc = run(["dbt-mxcp", "list", "--project-dir", str(project)], tmp_path, check=False)
    assert proc.returncode == 2
    assert "run `dbt parse`" in proc.stderr and "Traceback" not in proc.stderr


def test_no_project_is_a_usage_error(tmp_path: Path) -> None:
    proc = run(["dbt-mxcp", "validate"], tmp_path, check=False)
    assert proc.returncode == 2 and "no dbt_project.yml" in proc.stderr


def test_project_dir_env_var_and_target_flag(it_project: Project, tmp_path: Path) -> None:
    proc = run(["dbt-mxcp", "run", "tool", "get_person", "--param", "id=1"], tmp_path,
               extra_env={"DBT_PROJECT_DIR": str(it_project.path), "DBT_PROFILES_DIR": str(it_project.path)})
    assert json.loads(proc.stdout)["name"] == "Ann"
    bad = run(["dbt-mxcp", "run", "tool", "get_person", "--param", "id=1", "--target", "nope"], tmp_path,
              check=False, extra_env={"DBT_PROJECT_DIR": str(it_project.path),
                                      "DBT_PROFILES_DIR": str(it_project.path)})
    assert bad.returncode == 2 and "target 'nope' not found" in bad.stderr


# ---- the example ----------------------------------------------------------------------------------

def test_shop_quickstart_call(shop_project: Project) -> None:
    with (shop_project.path / "seeds" / "raw_customers.csv").open() as fh:
        want = sorted(int(r["customer_id"]) for r in csv.DictReader(fh)
                      if "ali" in f"{r['first_name']} {r['last_name']}".lower())
    got = shop_project.call("tool", "search_customers", "query=ali", user={"groups": ["support"]})
    assert [r["customer_id"] for r in got] == want
    assert {r["email"] for r in got} == {"****"}
    assert shop_project.mxcp("validate").returncode == 0


def test_warehouse_locked_by_a_writer_is_reported(it_project: Project, tmp_path: Path) -> None:
    import duckdb

    copy = tmp_path / "integration.duckdb"
    copy.write_bytes((it_project.path / "integration.duckdb").read_bytes())
    holder = duckdb.connect(str(copy))  # this test process holds the write lock, as `dbt run` would
    try:
        proc = run(["dbt-mxcp", "run", "tool", "get_person", "--param", "id=1", "--project-dir", str(it_project.path),
                    "--profiles-dir", str(it_project.path)], tmp_path, check=False,
                   extra_env={"DBT_MXCP_TEST_DB": str(copy), "DBT_MXCP_LOCK_WAIT": "0.5"})
    finally:
        holder.close()
    assert proc.returncode == 1
    assert f"(PID {os.getpid()})" in proc.stderr and "dbt run" in proc.stderr
