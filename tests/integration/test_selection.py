"""Endpoint selection (dbt_mxcp.selection) against `dbt ls` on copies of integration_tests/.

The expected endpoints of a selection are those whose host node `dbt ls --resource-type all`
lists for the same arguments; endpoint tags are checked against hand-written expectations.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbt_mxcp.errors import ConfigError
from dbt_mxcp.load import Loaded, load
from dbt_mxcp.project import Flags
from dbt_mxcp.selection import select_endpoints
from tests.helpers import REPO, Project, copy_project, env, run

# Tools given endpoint tags in the private copy; no node carries these tags.
ENDPOINT_TAGS = {"get_team": ["crm"], "team_overview": ["crm", "exec"]}

SELECTORS = {"selectors": [
    {"name": "people_downstream", "description": "What the people seed feeds, but the ephemeral helper.",
     "definition": {"union": [{"method": "fqn", "value": "people", "children": True},
                              {"exclude": [{"method": "fqn", "value": "int_active_people"}]}]}},
    # Rendered like dbt renders selectors.yml: env_var() with its default.
    {"name": "tagged_people", "definition": "tag:{{ env_var('DBT_MXCP_SELECTION_TEST_TAG', 'people') }}"},
    {"name": "people_models", "definition": {"intersection": [{"method": "selector", "value": "people_downstream"},
                                                               "resource_type:model"]}},
    {"name": "analyses_and_stats", "definition": {"union": ["resource_type:analysis", "team_stats"]}},
    {"name": "crm", "definition": {"method": "tag", "value": "crm"}},
    {"name": "sources_down", "default": True, "definition": "source:raw+"},
]}


@dataclass(frozen=True)
class Case:
    """One selection, as `dbt ls` arguments and as select_endpoints arguments."""

    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    selector: str | None = None
    state: bool = False

    def dbt_args(self, state_dir: Path) -> list[str]:
        args = ["--select", *self.select] if self.select else []
        args += ["--exclude", *self.exclude] if self.exclude else []
        args += ["--selector", self.selector] if self.selector else []
        return [*args, "--state", str(state_dir)] if self.state else args

    def __str__(self) -> str:
        return shlex.join(self.dbt_args(Path("STATE"))) or "(nothing)"


CASES = [
    Case(("people_enriched",)),
    Case(("+team_stats",)),
    Case(("people+",)),
    Case(("@people_enriched",)),
    Case(("1+team_stats",)),
    Case(("people+1",)),
    Case(("tag:people",)),
    Case(("path:models/properties.yml",)),
    Case(("path:analyses",)),
    Case(("resource_type:analysis",)),
    Case(("resource_type:exposure",)),
    Case(("config.materialized:view",)),
    Case(("source:raw+",)),
    Case(("people_enriched teams",)),                 # dbt's union within one argument
    Case(("people_enriched", "teams")),
    Case(("people+,resource_type:model",)),           # dbt's intersection
    Case(("people+",), ("team_stats",)),
    Case((), ("resource_type:exposure", "+people")),  # exclusion only: from everything
    Case(("state:modified",), state=True),
    Case(("state:modified+",), state=True),
    Case(selector="people_downstream"),
    Case(selector="tagged_people"),
    Case(selector="people_models"),
    Case(selector="analyses_and_stats"),
    Case(("teams",), ("people",), selector="people_models"),  # dbt: --selector wins over --select/--exclude
    Case(),                                            # dbt: the selector marked `default: true`
]


def _tag_tools(node: Any, tags: dict[str, list[str]]) -> bool:
    """Set `tags` on the tools named in `tags`, wherever a yml document declares them; whether any was."""
    found = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "tools" and isinstance(value, list):
                for tool in value:
                    if isinstance(tool, dict) and tool.get("name") in tags:
                        tool["tags"] = tags[tool["name"]]
                        found = True
            else:
                found = _tag_tools(value, tags) or found
    elif isinstance(node, list):
        for item in node:
            found = _tag_tools(item, tags) or found
    return found


def _load(project: Project) -> Loaded:
    return load(Flags(project_dir=str(project.path), profiles_dir=str(project.path)), freeze=False)


# `dbt ls` for every case in one process, through dbt's programmatic entry point (a `dbt ls`
# process each would spend seconds starting up). --no-write-json: target/ keeps the manifest
# that select_endpoints reads.
DBT_LS = """
import json, sys
from dbt.cli.main import dbtRunner

listed = []
for args in json.loads(open(sys.argv[1]).read()):
    res = dbtRunner().invoke(["ls", "--resource-type", "all", "--output", "json", "--output-keys", "unique_id",
                              "--quiet", "--no-write-json", "--log-level-file", "none", "--profiles-dir", ".", *args])
    if not res.success:
        sys.exit(f"dbt ls {' '.join(args)}: {res.exception}")
    listed.append([json.loads(line)["unique_id"] for line in res.result])
open(sys.argv[2], "w").write(json.dumps(listed))
"""


@dataclass(frozen=True)
class Selecting:
    """The private project, its registry and the saved target/ of its first parse (for --state)."""

    project: Project
    loaded: Loaded
    state_dir: Path

    def names(self, case: Case) -> list[str]:
        chosen = select_endpoints(self.loaded, case.select, case.exclude, case.selector,
                                  self.state_dir if case.state else None)
        return [e.name for e in chosen]

    def on(self, *nodes: str, also: tuple[str, ...] = ()) -> list[str]:
        """Enabled endpoints hosted on the nodes so named, or named in `also`, in registry order."""
        return [e.name for e in self.loaded.registry.all() if e.node_id.rsplit(".", 1)[-1] in nodes or e.name in also]


@pytest.fixture(scope="module")
def selecting(tmp_path_factory: pytest.TempPathFactory) -> Selecting:
    """A private copy of integration_tests/ with selectors.yml and endpoint tags, parsed; then
    team_stats.sql changed and parsed again, the first target/ kept for state:modified."""
    root = tmp_path_factory.mktemp("selection")
    project = Project(copy_project(REPO / "integration_tests", root / "integration_tests"))
    for path in project.path.glob("*/*.yml"):
        doc = yaml.safe_load(path.read_text())
        if _tag_tools(doc, ENDPOINT_TAGS):
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (project.path / "selectors.yml").write_text(yaml.safe_dump(SELECTORS, sort_keys=False))
    project.dbt("deps")
    project.dbt("parse")
    state_dir = shutil.copytree(project.path / "target", root / "state")
    sql = project.path / "models" / "team_stats.sql"
    sql.write_text(sql.read_text() + "\n-- changed: state:modified picks team_stats\n")
    project.dbt("parse")
    return Selecting(project, _load(project), state_dir)


@pytest.fixture(scope="module")
def listed(selecting: Selecting, tmp_path_factory: pytest.TempPathFactory) -> dict[Case, set[str]]:
    """What `dbt ls --resource-type all` selects for every case."""
    folder = tmp_path_factory.mktemp("dbt_ls")
    (folder / "cases.json").write_text(json.dumps([c.dbt_args(selecting.state_dir) for c in CASES]))
    run([sys.executable, "-c", DBT_LS, str(folder / "cases.json"), str(folder / "listed.json")],
        selecting.project.path)
    listed = json.loads((folder / "listed.json").read_text())
    return {case: set(ids) for case, ids in zip(CASES, listed, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_selection_matches_dbt_ls(selecting: Selecting, listed: dict[Case, set[str]], case: Case) -> None:
    expected = [e.name for e in selecting.loaded.registry.all() if e.node_id in listed[case]]
    assert selecting.names(case) == expected


def test_state_modified_picks_the_changed_model(selecting: Selecting) -> None:
    # Guards the parity cases above against a vacuous state:modified.
    assert selecting.names(Case(("state:modified",), state=True)) == selecting.on("team_stats")


@pytest.mark.parametrize(("case", "nodes", "endpoints"), [
    (Case(("tag:crm",)), (), ("get_team", "team_overview")),
    (Case(("tag:c?m",)), (), ("get_team", "team_overview")),         # dbt's tag globs
    (Case(("tag:exec tag:people",)), ("people_enriched",), ("team_overview",)),
    (Case(("tag:crm,resource_type:seed",)), (), ("get_team",)),
    (Case(("tag:crm+",)), (), ()),                                   # graph operators: nodes' tags only
    (Case(selector="crm"), (), ("get_team", "team_overview")),
], ids=lambda v: str(v) if isinstance(v, Case) else None)
def test_endpoint_tags_select_endpoints_only(selecting: Selecting, case: Case, nodes: tuple[str, ...],
                                             endpoints: tuple[str, ...]) -> None:
    assert selecting.names(case) == selecting.on(*nodes, also=endpoints)


def test_excluding_an_endpoint_tag_keeps_its_neighbours(selecting: Selecting) -> None:
    everything = [e.name for e in selecting.loaded.registry.all()]
    assert selecting.names(Case((), ("tag:crm",))) == [n for n in everything if n not in ENDPOINT_TAGS]
    teams = selecting.names(Case(("teams",), ("tag:crm",)))
    assert teams == [n for n in selecting.on("teams") if n != "get_team"] and teams  # the seed's other endpoints


@pytest.mark.parametrize(("case", "message"), [
    (Case(("bogus:people",)), "'bogus' is not a valid method name"),
    (Case(("@people+",)), "are incompatible"),
    (Case(selector="nope"), "no selector of that name"),
    (Case(("state:modified",)), "pass --state PATH"),
], ids=str)
def test_bad_selections_are_config_errors(selecting: Selecting, case: Case, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        selecting.names(case)


def test_dbt_warnings_go_to_stderr(selecting: Selecting, capsys: pytest.CaptureFixture[str]) -> None:
    assert selecting.names(Case(("no_such_node",))) == []
    out, err = capsys.readouterr()
    assert out == ""  # stdout belongs to the command (e.g. `dbt-mxcp test --output json`)
    assert "The selection criterion 'no_such_node' does not match any enabled nodes" in err


def test_state_without_a_manifest_is_a_config_error(selecting: Selecting, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no manifest.json in {tmp_path}"):
        select_endpoints(selecting.loaded, ["state:modified"], state=tmp_path)


def test_selection_errors_on_a_changed_project(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("parse")
    loaded = _load(project)
    (project.path / "selectors.yml").write_text("selectors:\n  - name: broken\n    definition: {unknown_key: 1}\n")
    with pytest.raises(ConfigError, match=r"selectors\.yml"):
        select_endpoints(loaded, selector="broken")
    (project.path / "selectors.yml").unlink()
    properties = project.path / "models" / "properties.yml"
    later = (project.path / "target" / "manifest.json").stat().st_mtime + 10
    os.utime(properties, (later, later))
    with pytest.raises(ConfigError, match=r"older than models/properties.yml: run `dbt parse`"):
        select_endpoints(loaded, ["people_enriched"])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def test_a_parsed_project_is_selected_without_parsing(it_project: Project,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dbt.parser.manifest import ManifestLoader

    def no_parse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("dbt parsed the project")

    monkeypatch.setattr(ManifestLoader, "load", no_parse)
    monkeypatch.setattr(ManifestLoader, "get_full_manifest", no_parse)
    before = {**_snapshot(it_project.path / "target"), **_snapshot(it_project.path / "logs")}
    loaded = _load(it_project)
    chosen = [e.name for e in select_endpoints(loaded, ["path:seeds", "resource_type:snapshot"])]
    assert chosen == [e.name for e in loaded.registry.all() if e.node_type in ("seed", "snapshot")]
    assert chosen  # `path:` globs from the project root, whatever the working directory
    after = {**_snapshot(it_project.path / "target"), **_snapshot(it_project.path / "logs")}
    assert after == before


def test_no_selection_never_imports_dbt(it_project: Project) -> None:
    code = ("import sys; from dbt_mxcp.load import load; from dbt_mxcp.project import Flags; "
            "from dbt_mxcp.selection import select_endpoints; "
            "loaded = load(Flags(project_dir='.', profiles_dir='.')); "
            "print(len(select_endpoints(loaded)), any(m == 'dbt' or m.startswith('dbt.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=it_project.path, env=env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(len(list(_load(it_project).registry.all()))), "False"]

