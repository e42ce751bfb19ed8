"""`dbt-mxcp init` on real dbt projects: what it writes, that the result validates and serves, idempotence."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dbt_mxcp.project import Flags, load_project
from dbt_mxcp.settings import load_settings
from tests.helpers import REPO, Project

SEED = "id,name,city\n1,Ann,Oslo\n2,Bob,Rome\n3,Cy,Oslo\n"
PROJECT = """\
name: tiny
version: "1.0.0"
config-version: 2
profile: tiny
flags: {send_anonymous_usage_stats: false}
"""
PROFILES = "tiny:\n  target: dev\n  outputs:\n    dev: {type: duckdb, path: tiny.duckdb, threads: 1}\n"
CUSTOMERS_SQL = "select id, name, upper(city) as city from {{ ref('raw_customers') }}\n"
COUNTS_SQL = "select city, count(*)::integer as n from {{ ref('customers') }} group by city\n"
SCHEMA = """\
version: 2
models:
  - name: customers
    description: One row per customer.
    columns:
      - name: id
        data_type: integer
        data_tests: [unique, not_null]
      - name: name
        data_type: varchar
      - name: city
        data_type: varchar
"""
OWN_PACKAGES = "# our own packages\npackages:\n  - local: helpers   # shared macros\n"
OWN_SETTINGS = "# ours\nlimits: {max_rows: 50}\n"


def _tiny(root: Path, *, documented: bool) -> Project:
    """A dbt project with a seed and two models; `documented` gives `customers` a yml with a tested key."""
    files = {"dbt_project.yml": PROJECT, "profiles.yml": PROFILES, "seeds/raw_customers.csv": SEED,
             "models/customers.sql": CUSTOMERS_SQL, "models/city_counts.sql": COUNTS_SQL}
    if documented:
        files |= {"models/schema.yml": SCHEMA, "packages.yml": OWN_PACKAGES,
                  "helpers/dbt_project.yml": 'name: helpers\nversion: "1.0.0"\nconfig-version: 2\n'}
    else:
        files["mxcp.yml"] = OWN_SETTINGS
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return Project(root)


def _snapshot(root: Path) -> dict[str, bytes]:
    skip = ("target", "logs", "dbt_packages")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip and not p.name.startswith(("tiny.", "package-"))
            and p.suffix not in (".duckdb", ".wal")}


def _seed_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(SEED)))


def _init_twice_unchanged(project: Project) -> str:
    """Run init a second time; no file may change, and it must say so. Returns the output."""
    before = _snapshot(project.path)
    out = project.mxcp("init").stdout
    assert _snapshot(project.path) == before
    assert "Nothing to change" in out
    return out


def test_init_adds_a_point_lookup_on_an_exposure_that_validates_and_answers(tmp_path: Path) -> None:
    project = _tiny(tmp_path / "tiny", documented=True)
    project.dbt("deps")
    project.dbt("parse")

    before = _snapshot(project.path)
    dry = project.mxcp("init", "--dry-run").stdout
    assert _snapshot(project.path) == before, "--dry-run wrote something"
    assert "Would create models/mxcp_example.yml" in dry and "get_customers" in dry

    out = project.mxcp("init").stdout
    assert "Created mxcp.yml" in out and "Created models/mxcp_example.yml" in out
    assert "Appended to packages.yml" in out
    config = json.loads(out[out.index("{"):out.index("\nNext steps")])
    server = config["mcpServers"]["tiny"]
    assert server["args"][:3] == ["serve", "--project-dir", str(project.path.resolve())]

    # The user's packages.yml is kept byte for byte; the entry is appended and resolves.
    packages = (project.path / "packages.yml").read_text()
    assert packages.startswith(OWN_PACKAGES)
    entries = yaml.safe_load(packages)["packages"]
    assert entries[0] == {"local": "helpers"} and "DBT_MXCP_PACKAGE_PATH" in entries[1]["local"]
    assert str(REPO) in entries[1]["local"]  # the editable install's checkout is the dbt package

    # customers has a yml patch already: the tool lives on a new exposure, never in schema.yml.
    example = yaml.safe_load((project.path / "models" / "mxcp_example.yml").read_text())
    tool = example["exposures"][0]["config"]["meta"]["mxcp"]["tools"][0]
    assert tool["name"] == "get_customers"
    assert tool["parameters"][0]["name"] == "id" and tool["parameters"][0]["type"] == "integer"
    assert (project.path / "models" / "schema.yml").read_text() == SCHEMA

    settings = load_settings(project.path, None, {})
    assert settings.server.name == "tiny" and settings.limits.max_rows == 1000

    project.dbt("deps")
    project.dbt("build")
    assert "all OK" in project.mxcp("validate").stdout
    seed = _seed_rows()[1]
    expected = {"id": int(seed["id"]), "name": seed["name"], "city": seed["city"].upper()}
    assert project.call("tool", "get_customers", f"id={seed['id']}") == expected

    _init_twice_unchanged(project)


def test_init_on_undocumented_models_writes_a_model_backed_list_tool(tmp_path: Path) -> None:
    project = _tiny(tmp_path / "tiny", documented=False)
    project.dbt("parse")
    out = project.mxcp("init").stdout
    assert "Skipped mxcp.yml: already exists" in out
    assert (project.path / "mxcp.yml").read_text() == OWN_SETTINGS
    assert "Created packages.yml" in out

    # No yml describes city_counts (first by path): a new `models:` entry may, model-backed.
    example = yaml.safe_load((project.path / "models" / "mxcp_example.yml").read_text())
    assert example["models"][0]["name"] == "city_counts"
    assert example["models"][0]["config"]["meta"]["mxcp"]["tools"][0]["name"] == "list_city_counts"

    project.dbt("deps")
    project.dbt("build")
    assert "all OK" in project.mxcp("validate").stdout
    rows = project.call("tool", "list_city_counts")
    counts = Counter(r["city"].upper() for r in _seed_rows())
    assert sorted((r["city"], r["n"]) for r in rows) == sorted(counts.items())

    _init_twice_unchanged(project)


def test_init_on_integration_tests_keeps_its_endpoints_and_package(fresh_it_project: Project) -> None:
    project = fresh_it_project
    packages = (project.path / "packages.yml").read_bytes()
    project.dbt("parse")
    out = project.mxcp("init").stdout
    assert "Created mxcp.yml" in out
    assert "Skipped models/mxcp_example.yml: the project already declares endpoints" in out
    assert "Skipped packages.yml: dbt_mxcp is already installed or listed" in out
    assert not (project.path / "models" / "mxcp_example.yml").exists()
    assert (project.path / "packages.yml").read_bytes() == packages
    name = load_project(Flags(project_dir=str(project.path))).name
    assert load_settings(project.path, None, {}).server.name == name

    project.dbt("build")
    assert "all OK" in project.mxcp("validate").stdout
    _init_twice_unchanged(project)


def test_init_without_a_manifest_asks_for_dbt_parse(tmp_path: Path) -> None:
    project = _tiny(tmp_path / "tiny", documented=False)
    proc = project.mxcp("init", check=False)
    assert proc.returncode == 2
    assert "dbt parse" in proc.stderr
    assert not (project.path / "packages.yml").exists()


@pytest.mark.parametrize("text", ["packages: []\n", "packages:\n  - {local: a}\nother: 1\n"])
def test_init_never_rewrites_a_packages_yml_it_cannot_append_to(tmp_path: Path, text: str) -> None:
    from dbt_mxcp.init import _append_item

    assert _append_item(text, '- local: "x"\n', {"local": "x"}) is None
