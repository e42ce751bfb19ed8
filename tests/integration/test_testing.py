"""`dbt-mxcp test`: endpoint tests through the served pipeline, reported as dbt reports its tests.

Expected values come from the warehouse file itself (read with DuckDB directly) and from the
manifest dbt wrote, never from dbt-mxcp's own code.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import duckdb
import junitparser
import yaml

from tests.helpers import REPO, Project
from tests.integration.test_server_calls import WRITES


def _declared_tests(project: Project) -> dict[str, list[str]]:
    """Tests declared in the manifest, by `kind name` (from dbt's manifest.json, not our registry)."""
    manifest = json.loads((project.path / "target" / "manifest.json").read_text())
    out: dict[str, list[str]] = {}
    nodes = [*manifest["nodes"].values(), *manifest["sources"].values(), *manifest["exposures"].values()]
    for node in nodes:
        mxcp = (node.get("config") or {}).get("meta", {}).get("mxcp") or {}
        for kind, key in (("tool", "tools"), ("resource", "resources"), ("prompt", "prompts")):
            for endpoint in mxcp.get(key) or []:
                if endpoint.get("enabled", True) is False or not endpoint.get("tests"):
                    continue
                name = endpoint.get("uri") or endpoint["name"]
                out[f"{kind} {name}"] = [t["name"] for t in endpoint["tests"]]
    return out


def test_every_declared_test_runs_and_passes(it_project: Project, tmp_path: Path) -> None:
    declared = _declared_tests(it_project)
    junit = tmp_path / "junit.xml"
    result = it_project.mxcp("test", "--junit-xml", str(junit), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(len(v) for v in declared.values())
    assert f"Done. PASS={total} FAIL=0 ERROR=0 SKIP=0 TOTAL={total}" in result.stdout
    # dbt's line format: "N of TOTAL PASS kind name: test ... [PASS in 0.01s]"
    assert f"1 of {total} PASS " in result.stdout and "[PASS in " in result.stdout
    # JUnit XML as CI tools read it: one suite per endpoint, one case per test.
    xml = junitparser.JUnitXml.fromfile(str(junit))
    suites = {suite.name: sorted(case.name for case in suite) for suite in xml}
    assert suites == {k: sorted(v) for k, v in declared.items()}
    assert all(case.is_passed for suite in xml for case in suite)


def _people(project: Project) -> list[dict[str, Any]]:
    with (REPO / "integration_tests" / "seeds" / "people.csv").open() as fh:
        return list(csv.DictReader(fh))


QA_TOOL = """
version: 2
exposures:
  - name: qa_app
    type: application
    owner: {name: QA}
    depends_on: [ref('people')]
    config:
      meta:
        mxcp:
          tools:
            - name: qa_people
              description: People of a team.
              parameters:
                - {name: team, type: string, description: A team.}
              source:
                code: "{% raw %}select id, name, email, salary from {{ ref('people') }}
                       where team = $team order by id{% endraw %}"
              policies:
                input:
                  - {condition: "team == 'legal' && user.role != 'lawyer'", action: deny, reason: Lawyers only}
                output:
                  - {condition: "user.role != 'admin'", action: mask_fields, fields: [email]}
              tests: TESTS
"""


def _qa_project(project: Project, tests: list[dict[str, Any]]) -> Project:
    text = QA_TOOL.replace("TESTS", json.dumps(tests))
    (project.path / "models" / "qa.yml").write_text(text)
    project.dbt("build")
    return project


def test_assertions_fail_with_reasons_and_exit_1(fresh_it_project: Project, tmp_path: Path) -> None:
    eng = [r for r in _people(fresh_it_project) if r["team"] == "eng"]
    first = eng[0]
    tests = [
        {"name": "exact_ok", "arguments": {"team": "eng"}, "user_context": {"role": "admin"},
         "result": [{"id": int(r["id"]), "name": r["name"], "email": r["email"] or None,
                     "salary": float(r["salary"])} for r in eng]},
        {"name": "length_wrong", "arguments": {"team": "eng"}, "result_length": len(eng) + 1},
        {"name": "masked_ok", "arguments": {"team": "eng"}, "result_masked": ["email"]},
        {"name": "masked_wrong", "arguments": {"team": "eng"}, "user_context": {"role": "admin"},
         "result_masked": ["email"]},
        {"name": "absent_wrong", "arguments": {"team": "eng"}, "result_not_contains": ["salary"]},
        {"name": "item_wrong", "arguments": {"team": "eng"}, "result_contains_item": {"name": "Nobody"}},
        {"name": "approx_ok", "arguments": {"team": "eng"},
         "result_contains_item": {"id": int(first["id"]), "salary": float(first["salary"]) + 0.004},
         "tolerance": 0.01},
        {"name": "approx_wrong", "arguments": {"team": "eng"},
         "result_contains_item": {"id": int(first["id"]), "salary": float(first["salary"]) + 0.5},
         "tolerance": 0.01},
        {"name": "denied_ok", "arguments": {"team": "legal"}, "expect_denied": "Lawyers only"},
        {"name": "denied_wrong", "arguments": {"team": "legal"}, "user_context": {"role": "lawyer"},
         "expect_denied": True},
        {"name": "error_not_denial", "arguments": {"team": 7}, "expect_denied": True},
        {"name": "error_ok", "arguments": {"team": 7}, "expect_error": "team"},
        {"name": "unexpected_error", "arguments": {}},
    ]
    project = _qa_project(fresh_it_project, tests)
    result = project.mxcp("test", "--select", "qa_app", "--output", "json", check=False)
    assert result.returncode == 1
    outcome = {r["name"]: r for r in json.loads(result.stdout)["results"]}
    assert {n for n, r in outcome.items() if r["status"] == "pass"} == {
        "exact_ok", "masked_ok", "approx_ok", "denied_ok", "error_ok"}
    assert f"{len(eng)} row(s), expected {len(eng) + 1}" in outcome["length_wrong"]["message"]
    assert "email should be masked" in outcome["masked_wrong"]["message"]
    assert "salary present" in outcome["absent_wrong"]["message"]
    assert 'no row has {"name":"Nobody"}' in outcome["item_wrong"]["message"]
    assert "salary" in outcome["approx_wrong"]["message"]
    assert "the call succeeded" in outcome["denied_wrong"]["message"]
    assert "not by a policy (invalid_arguments)" in outcome["error_not_denial"]["message"]
    assert "the call failed (invalid_arguments)" in outcome["unexpected_error"]["message"]
    assert all(r["path"].endswith("qa.yml") for r in outcome.values())
    # Text output: the failures again, with why, and dbt's summary.
    text = project.mxcp("test", "--select", "qa_app", check=False).stdout
    assert "Failure in tool qa_people: length_wrong" in text and "FAIL=8" in text and "PASS=5" in text


def test_fail_fast_threads_and_nothing_selected(fresh_it_project: Project) -> None:
    tests = [{"name": f"t{i}", "arguments": {"team": "eng"}, "result_length": 0 if i == 0 else 99}
             for i in range(6)]
    project = _qa_project(fresh_it_project, tests)
    fast = json.loads(project.mxcp("test", "-s", "qa_app", "-x", "--threads", "1", "--output", "json",
                                   check=False).stdout)["results"]
    assert [r["status"] for r in fast] == ["fail", *["skip"] * 5]
    serial = project.mxcp("test", "-s", "qa_app", "--threads", "1", "-o", "json", check=False)
    parallel = project.mxcp("test", "-s", "qa_app", "--threads", "4", "-o", "json", check=False)
    assert serial.returncode == parallel.returncode == 1
    statuses = [{r["name"]: r["status"] for r in json.loads(p.stdout)["results"]} for p in (serial, parallel)]
    assert statuses[0] == statuses[1] and list(statuses[0].values()).count("fail") == 6
    nothing = project.mxcp("test", "--select", "teams", "--exclude", "teams", check=False)
    assert nothing.returncode == 0 and "Nothing to test" in nothing.stdout


def test_tests_never_change_data(fresh_it_project: Project) -> None:
    # Writes are served in this project, and add_note gets a test: running it must not write.
    project = fresh_it_project
    (project.path / "mxcp.yml").write_text(yaml.safe_dump(WRITES))
    exposures = project.path / "models" / "exposures.yml"
    insert = "returning note_id, person_id, body\n"
    assert insert in exposures.read_text()
    exposures.write_text(exposures.read_text().replace(insert, insert + (
        "              tests:\n"
        "                - {name: adds_a_note, arguments: {person_id: 1, body: hello},\n"
        "                   result_contains: {person_id: 1}}\n"
        "                - {name: empty_body, arguments: {person_id: 1, body: ''}, expect_error: body}\n"), 1))
    project.dbt("build")
    project.call("tool", "add_note", "person_id=2", "body=before the tests")  # `run` does write
    result = json.loads(project.mxcp("test", "-s", "mcp_server", "-o", "json", check=False).stdout)["results"]
    outcome = {r["name"]: r for r in result}
    assert outcome["empty_body"]["status"] == "pass"  # validation still runs before anything is executed
    assert outcome["adds_a_note"]["status"] == "fail" and "writes are disabled" in outcome["adds_a_note"]["message"]
    notes = next(project.path.glob("target/mxcp_writes*.duckdb"))
    with duckdb.connect(str(notes), read_only=True) as con:
        assert con.execute("select person_id, body from notes").fetchall() == [(2, "before the tests")]
