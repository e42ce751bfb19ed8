"""`dbt-mxcp drift`: real builds of integration_tests/, one change at a time, classified and exit-coded.

One module-scoped project is built and snapshotted once (a warehouse baseline, a `--no-warehouse`
one, and a copy of its target/ folder for `--state`). Each scenario then copies that built folder
(target/ and the DuckDB file included), applies ONE edit to yml/SQL, rebuilds only what it needs
(`dbt build -s <model>` when the relation changes, `dbt parse` when only yml changes) and runs
`dbt-mxcp drift check`. Every expected change is written down from the edit itself (see the
endpoint table in integration_tests/README.md), never computed by dbt_mxcp.drift.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, Project, copy_project

PKG = "dbt_mxcp_integration_tests"
PEOPLE_ENRICHED = f"model.{PKG}.people_enriched"
TEAM_STATS = f"model.{PKG}.team_stats"
TEAMS = f"seed.{PKG}.teams"
RAW_EVENTS = f"source.{PKG}.raw.raw_events"
SALARY_BAND = f"analysis.{PKG}.salary_band"
MODELS_YML = "models/properties.yml"
SOURCES_YML = "models/sources.yml"
SEEDS_YML = "seeds/properties.yml"
ANALYSES_YML = "analyses/properties.yml"

# Enabled endpoints whose SQL reads people_enriched (ref() in their source, {{ this }}, or model-backed on it).
PEOPLE_ENRICHED_READERS = {"tool count_people", "tool events_since", "tool get_person", "tool greet_person",
                           "tool people_joined_since", "tool salary_band", "tool search_people",
                           "tool team_overview"}
TEAM_STATS_READERS = {"tool team_overview", "tool teams_on_floor"}

# Every endpoint declared in integration_tests (README.md's table plus the exposure's extra tools).
ALL_ENDPOINTS = sorted([
    ("prompt", "team_brief"), ("resource", "people://{id}"), ("resource", "teams://all"),
    *(("tool", name) for name in (
        "add_note", "count_people", "delete_notes", "events_since", "get_event", "get_person",
        "get_person_history", "get_team", "greet_person", "legacy_person_lookup", "people_in_team",
        "people_joined_since", "salary_band", "search_people", "slow_count", "team_overview", "team_summary",
        "teams_on_floor", "wait_a_while")),
])


# ---- building blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Replace `old` (which must occur exactly once) by `new`; with `upto`, replace from `old` up to
    (not including) the next `upto`."""

    path: str
    old: str
    new: str
    upto: str | None = None

    def apply(self, root: Path) -> None:
        file = root / self.path
        text = file.read_text()
        assert text.count(self.old) == 1, f"{self.path}: expected exactly one {self.old!r} (was the file edited?)"
        start = text.index(self.old)
        end = start + len(self.old)
        if self.upto is not None:
            end = text.index(self.upto, end)
        file.write_text(text[:start] + self.new + text[end:])


@dataclass(frozen=True)
class Expected:
    """One change the edit must produce."""

    severity: str
    kind: str
    endpoint: str | frozenset[str] | None  # a label, or the acceptable labels (a relation read by several)
    node: str | None
    yml_path: str | None
    mentions: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()  # text the message must not hold
    also: tuple[str, ...] = ()  # other acceptable names of this kind


@dataclass
class Base:
    """The module's built project and its baselines."""

    project: Project
    warehouse_baseline: Path
    manifest_baseline: Path
    state: Path  # a copy of target/ after the build, without mxcp_drift.json
    state_with_drift: Path  # the same, with the mxcp_drift.json `drift snapshot` wrote by default
    default_snapshot: Path
    root: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    root = tmp_path_factory.mktemp("drift")
    project = Project(copy_project(REPO / "integration_tests", root / "integration_tests"))
    project.dbt("deps")
    project.dbt("build")
    state = root / "state"
    shutil.copytree(project.path / "target", state)  # before any snapshot: no mxcp_drift.json in it
    project.mxcp("drift", "snapshot")  # default location: target/mxcp_drift.json
    default_snapshot = project.path / "target" / "mxcp_drift.json"
    warehouse_baseline = root / "baselines" / "warehouse.json"
    manifest_baseline = root / "baselines" / "manifest.json"
    project.mxcp("drift", "snapshot", "--output", str(warehouse_baseline))
    project.mxcp("drift", "snapshot", "--no-warehouse", "--output", str(manifest_baseline))
    state_with_drift = root / "state_with_drift"
    shutil.copytree(project.path / "target", state_with_drift)
    yield Base(project, warehouse_baseline, manifest_baseline, state, state_with_drift, default_snapshot, root)


def private_copy(base: Base, dest: Path) -> Project:
    """A copy of the built project (target/, dbt_packages' symlink and the DuckDB file included)."""
    shutil.copytree(base.project.path, dest, symlinks=True, ignore=shutil.ignore_patterns("logs"))
    return Project(dest)


def rebuild(project: Project, *dbt_args: str) -> None:
    """Run dbt in the copy; then the registry artifact must point at the copy's own DuckDB file."""
    project.dbt(*dbt_args)
    recorded = project.artifact().get("warehouse") or {}
    if recorded.get("path"):  # a stale artifact would make the check read the module project's warehouse
        assert Path(recorded["path"]).resolve().parent == project.path.resolve(), recorded


def drift_check(project: Project, *args: str) -> tuple[int, dict[str, Any]]:
    """`drift check ... -o json`: its exit code and its parsed report."""
    proc = project.mxcp("drift", "check", *args, "--output", "json", check=False)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"not JSON ({exc}):\n{proc.stdout}\nstderr:\n{proc.stderr}") from None
    return proc.returncode, report


def kinds(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((c["severity"], c["kind"]) for c in report["changes"])


def assert_changes(report: dict[str, Any], expected: list[Expected], context: str) -> None:
    """The report holds exactly the expected (severity, kind)s, each naming its endpoint, node and yml."""
    canonical = {alias: e.kind for e in expected for alias in e.also}
    for c in report["changes"]:
        c["kind"] = canonical.get(c["kind"], c["kind"])
    assert kinds(report) == sorted((e.severity, e.kind) for e in expected), \
        f"{context}: {json.dumps(report['changes'], indent=1)}"
    n_breaking = sum(e.severity == "breaking" for e in expected)
    assert report["summary"] == {"breaking": n_breaking, "non_breaking": len(expected) - n_breaking}, context
    for e in expected:
        [change] = [c for c in report["changes"] if c["kind"] == e.kind and c["severity"] == e.severity
                    and (e.node is None or c["node"] == e.node)]
        if isinstance(e.endpoint, frozenset):
            assert change["endpoint"] in e.endpoint, (context, change)
        else:
            assert change["endpoint"] == e.endpoint, (context, change)
        assert change["node"] == e.node, (context, change)
        assert change["yml_path"] == e.yml_path, (context, change)
        for text in e.mentions:
            assert text in change["message"], (context, text, change)
        for text in e.absent:
            assert text not in change["message"], (context, text, change)


# ---- the baselines ----------------------------------------------------------------------------------


def test_snapshots_are_stable_and_complete(base: Base) -> None:
    default = base.default_snapshot.read_text()
    explicit = base.warehouse_baseline.read_text()
    # Two snapshots of the same project differ only in generated_at: every other line is identical.
    differing = [(a, b) for a, b in zip(default.splitlines(), explicit.splitlines(), strict=True) if a != b]
    assert all('"generated_at"' in a and '"generated_at"' in b for a, b in differing), differing
    data = json.loads(explicit)
    assert json.dumps(data, indent=2, sort_keys=True) + "\n" == explicit  # keys sorted, 2-space indent
    assert data["schema_version"] == 1
    assert data["project"] == PKG
    # Every endpoint, the disabled one included, in (kind, name) order.
    assert [(e["kind"], e["name"]) for e in data["endpoints"]] == ALL_ENDPOINTS
    disabled = [e["name"] for e in data["endpoints"] if not e["enabled"]]
    assert disabled == ["legacy_person_lookup"]
    # Relation columns come from DuckDB, or from the manifest with --no-warehouse.
    people = data["relations"][PEOPLE_ENRICHED]
    assert people["from"] == "warehouse"
    assert people["columns"] == {"id": "integer", "name": "varchar", "email": "varchar", "team": "varchar",
                                 "floor": "integer", "salary": "decimal(10,2)", "joined": "date",
                                 "joined_year": "integer", "active": "boolean"}
    declared = json.loads(base.manifest_baseline.read_text())
    assert declared["relations"][PEOPLE_ENRICHED]["from"] == "manifest"
    assert declared["relations"][PEOPLE_ENRICHED]["columns"] == people["columns"]
    assert [(e["kind"], e["name"]) for e in declared["endpoints"]] == ALL_ENDPOINTS


def test_unchanged_project_has_no_drift(base: Base) -> None:
    project = base.project
    for args in (["--baseline", str(base.warehouse_baseline)], ["--baseline", str(base.manifest_baseline)],
                 ["--state", str(base.state)], ["--state", str(base.state_with_drift)], ["--warehouse"],
                 ["--baseline", str(base.warehouse_baseline), "--warehouse", "--strict"]):
        code, report = drift_check(project, *args)
        assert (code, report["changes"]) == (0, []), (args, report)
        assert report["summary"] == {"breaking": 0, "non_breaking": 0}
    text = project.mxcp("drift", "check", "--baseline", str(base.warehouse_baseline))
    assert "0 breaking, 0 non-breaking" in text.stdout + text.stderr
    markdown = project.mxcp("drift", "check", "--warehouse", "--output", "markdown")
    assert "No drift" in markdown.stdout


def test_state_prefers_its_mxcp_drift_json(base: Base, tmp_path: Path) -> None:
    """--state DIR reads DIR/mxcp_drift.json when present, not the manifest beside it."""
    state = tmp_path / "state"
    shutil.copytree(base.state, state)
    data = json.loads(base.warehouse_baseline.read_text())
    [get_team] = [e for e in data["endpoints"] if e["name"] == "get_team"]
    get_team["description"] = "An older wording."
    get_team["description_hash"] = "0" * 64
    (state / "mxcp_drift.json").write_text(json.dumps(data))
    code, report = drift_check(base.project, "--state", str(state))
    assert code == 0
    assert_changes(report, [Expected("non-breaking", "description_changed", "tool get_team", TEAMS, SEEDS_YML)],
                   "state with an edited mxcp_drift.json")
    # Only the baseline file: no manifest.json is needed beside it.
    only_file = tmp_path / "only_file"
    only_file.mkdir()
    shutil.copy(state / "mxcp_drift.json", only_file / "mxcp_drift.json")
    assert drift_check(base.project, "--state", str(only_file)) == (code, report | {"against": str(only_file)})


# ---- one change at a time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    edits: tuple[Edit, ...]
    dbt: tuple[str, ...]  # what to rerun after the edit
    expected: list[Expected]


_JOINED_YEAR_SQL = "    cast(extract(year from p.joined) as integer) as joined_year,\n"
_JOINED_YEAR_YML = "      - name: joined_year\n        data_type: integer\n"
_GET_EVENT_PARAM = "                    - {name: event_id, type: integer, minimum: 1, description: The event's id.}\n"
_PE_READERS = frozenset(PEOPLE_ENRICHED_READERS)
_ACTIVE_COUNT_SQL = "    cast(coalesce(a.active_count, 0) as integer) as active_count,\n"
_ACTIVE_COUNT_YML = "      - {name: active_count, data_type: integer}\n"

SCENARIOS = [
    Scenario(
        "drop_column",
        (Edit("models/people_enriched.sql", _JOINED_YEAR_SQL, ""), Edit(MODELS_YML, _JOINED_YEAR_YML, "")),
        ("build", "-s", "people_enriched"),
        [Expected("breaking", "return_column_removed", "tool get_person", PEOPLE_ENRICHED, MODELS_YML,
                  ("joined_year",)),
         Expected("breaking", "relation_column_removed", _PE_READERS, PEOPLE_ENRICHED, MODELS_YML,
                  ("joined_year", *sorted(PEOPLE_ENRICHED_READERS)))]),
    # A relation change names the relation's own yml (models/properties.yml for team_stats), not
    # that of its first reader (tool team_overview's models/exposures.yml): a regression check,
    # since _relation_changes once did the latter. For people_enriched above the two coincide.
    Scenario(
        "drop_column_of_view",
        (Edit("models/team_stats.sql", _ACTIVE_COUNT_SQL, ""), Edit(MODELS_YML, _ACTIVE_COUNT_YML, "")),
        ("build", "-s", "team_stats"),
        [Expected("breaking", "return_column_removed", "tool teams_on_floor", TEAM_STATS, MODELS_YML,
                  ("active_count",)),
         Expected("breaking", "relation_column_removed", frozenset(TEAM_STATS_READERS), TEAM_STATS, MODELS_YML,
                  ("active_count", *sorted(TEAM_STATS_READERS)))]),
    Scenario(
        "change_column_type",
        (Edit("models/people_enriched.sql", _JOINED_YEAR_SQL, _JOINED_YEAR_SQL.replace("integer", "varchar")),
         Edit(MODELS_YML, _JOINED_YEAR_YML, _JOINED_YEAR_YML.replace("integer", "varchar"))),
        ("build", "-s", "people_enriched"),
        [Expected("breaking", "return_type_changed", "tool get_person", PEOPLE_ENRICHED, MODELS_YML,
                  ("joined_year",)),
         Expected("breaking", "relation_column_type_changed", _PE_READERS, PEOPLE_ENRICHED, MODELS_YML,
                  ("joined_year", "integer", "varchar"))]),
    Scenario(
        "add_column",
        (Edit("models/people_enriched.sql", "    p.active\nfrom", "    p.active,\n    upper(p.name) as shout\nfrom"),
         Edit(MODELS_YML, "      - name: active\n        data_type: boolean\n",
              "      - name: active\n        data_type: boolean\n      - name: shout\n        data_type: varchar\n")),
        ("build", "-s", "people_enriched"),
        [Expected("non-breaking", "return_column_added", "tool get_person", PEOPLE_ENRICHED, MODELS_YML, ("shout",)),
         Expected("non-breaking", "relation_column_added", _PE_READERS, PEOPLE_ENRICHED, MODELS_YML, ("shout",))]),
    Scenario(
        "remove_tool",
        (Edit(MODELS_YML, "            # model-backed with an array return", "",
              upto="            # source.file with a scalar return"),),
        ("parse",),
        [Expected("breaking", "endpoint_removed", "tool teams_on_floor", TEAM_STATS, MODELS_YML,
                  ("teams_on_floor",), absent=("renamed",))]),
    Scenario(
        "rename_tool",
        (Edit(MODELS_YML, "- name: teams_on_floor\n", "- name: teams_by_floor\n"),),
        ("parse",),
        [Expected("breaking", "endpoint_removed", "tool teams_on_floor", TEAM_STATS, MODELS_YML,
                  ("renamed to teams_by_floor",)),
         Expected("non-breaking", "endpoint_added", "tool teams_by_floor", TEAM_STATS, MODELS_YML)]),
    Scenario(
        "add_required_parameter",
        (Edit(SOURCES_YML, _GET_EVENT_PARAM,
              _GET_EVENT_PARAM + "                    - {name: person_id, type: integer, description: Whose.}\n"),),
        ("parse",),
        [Expected("breaking", "parameter_added_required", "tool get_event", RAW_EVENTS, SOURCES_YML,
                  ("person_id",))]),
    Scenario(
        "add_optional_parameter",
        (Edit(SOURCES_YML, _GET_EVENT_PARAM, _GET_EVENT_PARAM + "                    - {name: person_id, "
              "type: integer, default: 1, description: Whose.}\n"),),
        ("parse",),
        [Expected("non-breaking", "parameter_added_optional", "tool get_event", RAW_EVENTS, SOURCES_YML,
                  ("person_id",))]),
    Scenario(
        "reword_description",
        (Edit(SEEDS_YML, "description: One team and its floor.\n",
              "description: The team with this name, and the floor it sits on.\n"),),
        ("parse",),
        [Expected("non-breaking", "description_changed", "tool get_team", TEAMS, SEEDS_YML)]),
    Scenario(
        "remove_enum_value",
        (Edit(SOURCES_YML, "enum: [login, logout, purchase]", "enum: [login, logout]"),),
        ("parse",),
        [Expected("breaking", "enum_value_removed", "tool events_since", RAW_EVENTS, SOURCES_YML,
                  ("kind", "purchase"))]),
    Scenario(
        "remove_deny_policy",
        (Edit(ANALYSES_YML, "              policies:\n                input:\n", "", upto="              tests:\n"),),
        ("parse",),
        [Expected("breaking", "policy_removed_or_changed", "tool salary_band", SALARY_BAND, ANALYSES_YML,
                  ("deny",))]),
    Scenario(
        # mask_fields needs at least one field: email (masked before) is swapped for name.
        "mask_fields_loses_a_field",
        (Edit(MODELS_YML, "fields: [email]", "fields: [name]"),),
        ("parse",),
        [Expected("breaking", "policy_loosened", "tool search_people", PEOPLE_ENRICHED, MODELS_YML,
                  ("mask_fields", "email"))]),
    # Declared types are compared as types: `int` for `integer` (the same DuckDB type: see
    # same_type) is no drift against any baseline, manifest-only ones included (a regression check:
    # they were once compared as strings).
    Scenario(
        "type_alias_is_no_drift",
        (Edit(MODELS_YML, "{name: headcount, data_type: integer}", "{name: headcount, data_type: int}"),),
        ("parse",),
        []),
    # Re-enabling a disabled endpoint is reported (clients now see a new tool): a non-breaking
    # endpoint_added or endpoint_enabled naming it (a regression check: it once reported nothing).
    Scenario(
        "enable_endpoint",
        (Edit(MODELS_YML, "              enabled: false\n", ""),),
        ("parse",),
        [Expected("non-breaking", "endpoint_added", "tool legacy_person_lookup", PEOPLE_ENRICHED, MODELS_YML,
                  ("legacy_person_lookup",), also=("endpoint_enabled",))]),
    Scenario(
        "disable_endpoint",
        (Edit(SEEDS_YML, "description: One team and its floor.\n",
              "description: One team and its floor.\n              enabled: false\n"),),
        ("parse",),
        [Expected("breaking", "endpoint_disabled", "tool get_team", TEAMS, SEEDS_YML)]),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_one_change(base: Base, tmp_path: Path, scenario: Scenario) -> None:
    project = private_copy(base, tmp_path / "integration_tests")
    for edit in scenario.edits:
        edit.apply(project.path)
    rebuild(project, *scenario.dbt)
    breaking = any(e.severity == "breaking" for e in scenario.expected)
    # The same classification against every kind of baseline (all four checked, failures reported together).
    failures = []
    for args in (["--baseline", str(base.warehouse_baseline)], ["--baseline", str(base.manifest_baseline)],
                 ["--state", str(base.state)], ["--state", str(base.state_with_drift)]):
        code, report = drift_check(project, *args)
        context = f"{scenario.id} {' '.join(args)}"
        try:
            assert code == (1 if breaking else 0), (context, report)
            assert_changes(report, scenario.expected, context)
            assert report["against"] == args[1]
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)
    if not breaking:  # reported, and fatal with --strict (unless there is nothing to report)
        code, report = drift_check(project, "--baseline", str(base.warehouse_baseline), "--strict")
        assert code == (1 if scenario.expected else 0), report
        assert_changes(report, scenario.expected, f"{scenario.id} --strict")


# ---- output formats ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def changed(base: Base, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One breaking change (a required parameter on get_event) and one non-breaking (get_team's wording)."""
    project = private_copy(base, tmp_path_factory.mktemp("drift_changed") / "integration_tests")
    Edit(SOURCES_YML, _GET_EVENT_PARAM,
         _GET_EVENT_PARAM + "                    - {name: person_id, type: integer, description: Whose.}\n",
         ).apply(project.path)
    Edit(SEEDS_YML, "description: One team and its floor.\n", "description: A team, with its floor.\n"
         ).apply(project.path)
    rebuild(project, "parse")
    return project


def _check(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return project.mxcp("drift", "check", *args, check=False)


def test_output_json(base: Base, changed: Project) -> None:
    proc = _check(changed, "--baseline", str(base.warehouse_baseline), "--output", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"against", "changes", "summary"}
    assert report["against"] == str(base.warehouse_baseline)
    assert report["summary"] == {"breaking": 1, "non_breaking": 1}
    for change in report["changes"]:
        assert set(change) == {"severity", "kind", "message", "endpoint", "node", "yml_path"}
    # breaking changes first
    assert [c["kind"] for c in report["changes"]] == ["parameter_added_required", "description_changed"]


def test_output_markdown(base: Base, changed: Project) -> None:
    proc = _check(changed, "--baseline", str(base.warehouse_baseline), "--output", "markdown")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert "**1 breaking**" in proc.stdout
    header = "| Endpoint | Change | Node | File |"
    assert lines.count(header) == 2  # one table per severity
    breaking_at = lines.index("#### Breaking")
    other_at = lines.index("#### Non-breaking")
    breaking_rows = [ln for ln in lines[breaking_at:other_at] if ln.startswith("| tool ")]
    other_rows = [ln for ln in lines[other_at:] if ln.startswith("| tool ")]
    assert len(breaking_rows) == 1 and len(other_rows) == 1, proc.stdout
    cells = [c.strip() for c in breaking_rows[0].strip("|").split(" | ")]
    assert cells[0] == "tool get_event"
    assert "person_id" in cells[1]
    assert cells[2:] == [f"`{RAW_EVENTS}`", SOURCES_YML]
    assert other_rows[0].startswith("| tool get_team |") and other_rows[0].endswith(f"| `{TEAMS}` | {SEEDS_YML} |")


def test_output_github(base: Base, changed: Project) -> None:
    proc = _check(changed, "--baseline", str(base.warehouse_baseline), "--output", "github")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(ln.startswith("::") for ln in lines), proc.stdout
    assert lines[0].startswith(f"::error file={SOURCES_YML},title=")
    assert "parameter_added_required" in lines[0].split("::")[1]
    assert "person_id" in lines[0].split("::", 2)[2]
    assert lines[1].startswith(f"::warning file={SEEDS_YML},title=")
    assert "description_changed" in lines[1].split("::")[1]


def test_output_text(base: Base, changed: Project) -> None:
    proc = _check(changed, "--baseline", str(base.warehouse_baseline))
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "BREAKING" in out and "person_id" in out and RAW_EVENTS in out and SOURCES_YML in out
    assert "1 breaking, 1 non-breaking" in out


# ---- live drift: the manifest against the warehouse -------------------------------------------------


def test_live_relation_not_built(base: Base, tmp_path: Path) -> None:
    """Two new models declared and parsed, never built: one read by a tool (breaking), one not."""
    project = private_copy(base, tmp_path / "integration_tests")
    (project.path / "models" / "drift_new.sql").write_text("select 1 as id\n")
    (project.path / "models" / "drift_quiet.sql").write_text("select 1 as id\n")
    (project.path / "models" / "drift_new.yml").write_text("""\
version: 2
models:
  - name: drift_new
    config:
      meta:
        mxcp:
          tools:
            - name: get_new
              description: One row of drift_new.
              parameters:
                - {name: id, type: integer, description: The id.}
              return: {type: object}
    columns:
      - {name: id, data_type: integer}
  - name: drift_quiet
    columns:
      - {name: id, data_type: integer}
""")
    rebuild(project, "parse")
    code, report = drift_check(project, "--warehouse")
    assert code == 1
    assert_changes(report, [
        Expected("breaking", "relation_not_built", "tool get_new", f"model.{PKG}.drift_new", "models/drift_new.yml",
                 ("drift_new",)),
        Expected("non-breaking", "relation_not_built", None, f"model.{PKG}.drift_quiet", "models/drift_new.yml",
                 ("drift_quiet",)),
    ], "live: not built")


def test_live_column_not_built_and_type_mismatch(base: Base, tmp_path: Path) -> None:
    """team_stats (read by two tools) declares a column it does not build, and another type for headcount."""
    project = private_copy(base, tmp_path / "integration_tests")
    Edit(MODELS_YML, "      - {name: headcount, data_type: integer}\n",
         "      - {name: headcount, data_type: varchar}\n      - {name: median_salary, data_type: double}\n",
         ).apply(project.path)
    rebuild(project, "parse")
    code, report = drift_check(project, "--warehouse")
    assert code == 1
    readers = frozenset(TEAM_STATS_READERS)
    assert_changes(report, [
        Expected("breaking", "column_not_built", readers, TEAM_STATS, MODELS_YML, ("median_salary",)),
        Expected("breaking", "column_type_mismatch", readers, TEAM_STATS, MODELS_YML,
                 ("headcount", "varchar", "integer")),
    ], "live: columns")
    for change in report["changes"]:
        for reader in TEAM_STATS_READERS:
            assert reader in change["message"], change


# ---- usage and configuration errors -----------------------------------------------------------------


def _usage_error(project: Project, *args: str) -> str:
    proc = _check(project, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out}"
    assert "Traceback" not in out and "Internal error" not in out and "bug in dbt-mxcp" not in out, out
    return out


# Wrong flags are a plain usage error naming them, never "Internal error: UsageError" (a regression
# check: @handle_errors once caught click's exceptions).
@pytest.mark.parametrize(("args", "says"), [
    ((), "--baseline"),
    (("--baseline", "{baseline}", "--state", "{state}"), "not both"),
], ids=["no_flags", "baseline_and_state"])
def test_usage_error_flags(base: Base, args: tuple[str, ...], says: str) -> None:
    args = tuple(a.format(baseline=base.warehouse_baseline, state=base.state) for a in args)
    assert says in _usage_error(base.project, *args)


@pytest.mark.parametrize(("content", "says"), [
    ("this is { not json\n", ["cannot read the drift baseline", "bad.json"]),
    ("[1, 2]\n", ["not a drift baseline", "bad.json"]),
    (None, ["schema version 99", "drift snapshot"]),  # the real baseline with schema_version 99
], ids=["not_json", "not_a_baseline", "other_schema_version"])
def test_unreadable_baseline(base: Base, tmp_path: Path, content: str | None, says: list[str]) -> None:
    bad = tmp_path / "bad.json"
    if content is None:
        content = json.dumps(json.loads(base.warehouse_baseline.read_text()) | {"schema_version": 99})
    bad.write_text(content)
    out = _usage_error(base.project, "--baseline", str(bad))
    for text in says:
        assert text in out, out


def test_missing_baseline_or_state(base: Base, tmp_path: Path) -> None:
    assert "no drift baseline at" in _usage_error(base.project, "--baseline", str(tmp_path / "missing.json"))
    empty = tmp_path / "empty_state"
    empty.mkdir()
    assert "manifest.json" in _usage_error(base.project, "--state", str(empty))


# With a warehouse baseline and the DuckDB file gone, the check must not exit 1 (the code for
# breaking drift): it compares without the built columns, or fails as a configuration error (a
# regression check: the WarehouseError once escaped the fallback and exited 1).
def test_missing_warehouse_is_not_breaking_drift(base: Base, tmp_path: Path) -> None:
    project = private_copy(base, tmp_path / "integration_tests")
    rebuild(project, "parse")
    (project.path / "integration.duckdb").unlink()
    proc = _check(project, "--baseline", str(base.warehouse_baseline), "--output", "json")
    assert proc.returncode in (0, 2), f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "Internal error" not in proc.stdout + proc.stderr
