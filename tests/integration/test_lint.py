"""`dbt-mxcp lint` on real dbt projects: one built to break every rule once, and the repo's own projects.

The broken project is parsed by real dbt (with dbt-mxcp's plugin); lint then runs as a user runs it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbt_mxcp.lint import RULES
from tests.helpers import REPO, Project, copy_project, run

DBT_PROJECT = """
name: lintbreak
version: "1.0.0"
config-version: 2
profile: lintbreak
flags:
  send_anonymous_usage_stats: false
"""

# A policy set two endpoints use: its unguarded read is one finding, at its place in mxcp.yml.
SETTINGS = """
policy_sets:
  pro_only:
    input:
      - {condition: "user.claims.plan != 'pro'", action: deny, reason: Pro plan only}
"""

PROFILES = """
lintbreak:
  target: dev
  outputs:
    dev: {type: duckdb, path: lintbreak.duckdb}
"""

MODELS = {
    "orders": "select 1 as order_id, 7 as customer_id, 'placed' as status, 10.5 as amount",
    "customers": "select 7 as customer_id, 'a@example.com' as email, 'US' as country, 'gold' as tier",
    "events": "select 1 as event_id, 'login' as action",
    "legacy": "select 1 as id, 'x' as note",
}

# Each endpoint is clean but for the rule named in its comment.
SCHEMA = """
version: 2
models:
  - name: orders
    description: One row per order.
    config:
      contract: {enforced: true}
      meta:
        mxcp:
          tools:
            - name: orders_by_status         # enum-like-parameter
              description: Orders in one status.
              parameters:
                - {name: status, type: string, description: The status., examples: [placed]}
              source:
                code: >-
                  {% raw %}select order_id, status, amount from {{ ref('orders') }}
                  where status = $status{% endraw %}
              return:
                type: array
                items:
                  type: object
                  properties:
                    order_id: {type: integer, description: Order key.}
                    status: {type: string, description: Order status.}
                    amount: {type: number, description: Amount in USD.}
              tests: [{name: placed, arguments: {status: placed}, result_length: 1}]
            - name: order_count              # missing-example
              description: How many orders a customer placed.
              parameters:
                - {name: customer_id, type: integer, description: The customer.}
              policies: {use: [pro_only]}
              source:
                code: >-
                  {% raw %}select count(*) as n from {{ ref('orders') }}
                  where customer_id = $customer_id{% endraw %}
              return: {type: integer, description: Number of orders.}
              tests: [{name: seven, arguments: {customer_id: 7}, result: 1}]
            - name: all_orders               # select-star
              description: Orders of at least an amount.
              parameters:
                - {name: min_amount, type: number, description: Smallest amount., examples: [0]}
              source:
                code: |
                  {% raw %}
                  -- select * in a comment and 'select *' in a string are not findings
                  with o as (select * from {{ ref('orders') }})
                  select *
                  from o where amount >= $min_amount and status <> 'select *'
                  {% endraw %}
              return:
                type: array
                items:
                  type: object
                  properties:
                    order_id: {type: integer, description: Order key.}
                    customer_id: {type: integer, description: Customer key.}
                    status: {type: string, description: Order status.}
                    amount: {type: number, description: Amount in USD.}
              tests: [{name: all, arguments: {min_amount: 0}, result_length: 1}]
            - name: get_order                # return-description-from-dbt
              description: One order by id.
              parameters:
                - {name: order_id, type: integer, description: The order., examples: [1]}
              return: {type: object}
              policies: {use: [pro_only]}
              tests: [{name: one, arguments: {order_id: 1}, result_contains: {status: placed}}]
            - name: order_total              # missing-tests
              description: Total amount a customer spent.
              parameters:
                - {name: customer_id, type: integer, description: The customer., examples: [7]}
              source:
                code: >-
                  {% raw %}select sum(amount) as total from {{ ref('orders') }}
                  where customer_id = $customer_id{% endraw %}
              return: {type: number, description: Total in USD.}
            - name: count_orders             # endpoint-description-from-dbt
              source:
                code: "{% raw %}select count(*) as n from {{ ref('orders') }}{% endraw %}"
              return: {type: integer, description: Number of orders.}
              tests: [{name: one, result: 1}]
            - name: order_statuses           # return-description
              description: The statuses orders are in.
              source:
                code: "{% raw %}select distinct status from {{ ref('orders') }}{% endraw %}"
              return:
                type: array
                items: {type: object, properties: {status: {type: string}}}
              tests: [{name: one, result_length: 1}]
          resources:
            - uri: "orders://{order_id}"     # parameter-description-from-dbt
              description: One order.
              return: {type: object}
              tests: [{name: one, arguments: {order_id: 1}, result_contains: {status: placed}}]
    columns:
      - {name: order_id, data_type: integer, description: Order key.}
      - {name: customer_id, data_type: integer, description: Customer key.}
      - name: status
        data_type: varchar
        description: Order status.
        data_tests:
          - accepted_values:
              arguments: {values: [placed, shipped]}
      - {name: amount, data_type: double, description: Amount in USD.}

  - name: customers
    description: One row per customer.
    config:
      contract: {enforced: true}
      meta:
        mxcp:
          tools:
            - name: get_customer             # unprotected-sensitive-field
              description: One customer by id.
              parameters:
                - {name: customer_id, type: integer, description: The customer., examples: [7]}
              return: {type: object}
              tests: [{name: seven, arguments: {customer_id: 7}, result_contains: {country: US}}]
            - name: customers_by_tier        # unguarded-policy-field (input[0] only)
              description: Customers of one tier.
              parameters:
                - {name: tier, type: string, description: The tier., enum: [gold, silver]}
              source:
                code: "{% raw %}select customer_id, country from {{ ref('customers') }} where tier = $tier{% endraw %}"
              return:
                type: array
                items:
                  type: object
                  properties:
                    customer_id: {type: integer, description: Customer key.}
                    country: {type: string, description: Country code.}
              policies:
                input:
                  - {condition: "user.claims.tenant != 'acme'", action: deny}
                  - condition: "has(user.claims.region) && user.claims.region != 'eu' || user.role == 'x'"
                    action: deny
              tests:
                - {name: gold, arguments: {tier: gold}, user_context: {claims: {tenant: acme}}, result_length: 1}
    columns:
      - {name: customer_id, data_type: integer, description: Customer key.}
      - name: email
        data_type: varchar
        description: Contact email.
        config: {meta: {mxcp: {sensitive: true}}}
      - name: country                     # misplaced-mxcp
        data_type: varchar
        description: Country code.
        mxcp: {sensitive: true}
      - {name: tier, data_type: varchar, description: Loyalty tier.}

  - name: events
    tags: [ignored]                        # ignored-tags
    config:
      contract: {enforced: true}
      meta:
        mxcp:
          tools:
            - name: recent_events            # endpoint-description
              parameters:
                - {name: after, type: integer, description: Events after this id., examples: [0]}
              source:
                code: "{% raw %}select event_id from {{ ref('events') }} where event_id > $after{% endraw %}"
              return: {type: array, items: {type: integer, description: Event id.}}
              tests: [{name: all, arguments: {after: 0}, result_length: 1}]
            - name: events_after             # parameter-description
              description: Events after an id.
              parameters:
                - {name: after, type: integer, examples: [0]}
              source:
                code: "{% raw %}select event_id from {{ ref('events') }} where event_id > $after{% endraw %}"
              return: {type: array, items: {type: integer, description: Event id.}}
              tests: [{name: all, arguments: {after: 0}, result_length: 1}]
            - name: broken                   # invalid-declaration
              description: Not a valid declaration.
              bogus_key: 1
    columns:
      - {name: event_id, data_type: integer, description: Event key.}
      - {name: action, data_type: varchar, description: What happened.}
      - {name: weight, data_type: decimal(10,2), description: How much.}   # truncated-data-type

  - name: legacy                           # contract-not-enforced, undocumented-column
    description: Old rows.
    meta:                                  # top-level-meta
      mxcp:
        tools:
          - name: get_legacy
            description: One old row by id.
            parameters:
              - {name: id, type: integer, description: The row., examples: [1]}
            return: {type: object}
            tests: [{name: one, arguments: {id: 1}, result_contains: {note: x}}]
    columns:
      - {name: id, data_type: integer, description: Row key.}
      - {name: note, data_type: varchar}

sources:
  - name: raw                              # source-level-mxcp
    schema: main
    config:
      meta:
        mxcp:
          tools:
            - name: get_item
              description: One raw item.
              parameters:
                - {name: item_id, type: integer, description: The item., examples: [1]}
              source:
                code: >-
                  {% raw %}select item_id, label from {{ source('raw', 'items') }}
                  where item_id = $item_id{% endraw %}
              return:
                type: object
                properties:
                  item_id: {type: integer, description: Item key.}
                  label: {type: string, description: Item label.}
              tests: [{name: one, arguments: {item_id: 1}, result_contains: {label: x}}]
    tables:
      - name: items
"""

# rule id -> where it must fire: (endpoint label, or node id, or None for a yml placement; subject)
EXPECTED: dict[str, set[tuple[str | None, str | None]]] = {
    "invalid-declaration": {("tool broken", None)},
    "endpoint-description": {("tool recent_events", None)},
    "endpoint-description-from-dbt": {("tool count_orders", None)},
    "parameter-description": {("tool events_after", "parameter after")},
    "parameter-description-from-dbt": {("resource orders://{order_id}", "parameter order_id")},
    "return-description": {("tool order_statuses", "return")},
    "return-description-from-dbt": {("tool get_order", "return"), ("resource orders://{order_id}", "return"),
                                    ("tool get_customer", "return"), ("tool get_legacy", "return")},
    "undocumented-column": {("model.lintbreak.legacy", "column note")},
    "missing-example": {("tool order_count", "parameter customer_id"),
                        ("resource orders://{order_id}", "parameter order_id")},  # a URI parameter has none
    "enum-like-parameter": {("tool orders_by_status", "parameter status")},
    "missing-tests": {("tool order_total", None)},
    "contract-not-enforced": {("model.lintbreak.legacy", "contract")},
    "select-star": {("tool all_orders", "select *")},
    "unguarded-policy-field": {("tool customers_by_tier", "policies.input[0]"),
                               (None, "policy_sets.pro_only.input[0]")},
    "unprotected-sensitive-field": {("tool get_customer", "policies.output")},
    "misplaced-mxcp": {(None, "model customers, column country")},
    "top-level-meta": {(None, "model legacy")},
    "source-level-mxcp": {(None, "source raw")},
    "ignored-tags": {(None, "model events")},
    "truncated-data-type": {("model.lintbreak.events", "column weight")},
}


def write_project(path: Path) -> Project:
    """The project that breaks every rule, unparsed."""
    (path / "models").mkdir(parents=True)
    (path / "dbt_project.yml").write_text(DBT_PROJECT)
    (path / "profiles.yml").write_text(PROFILES)
    (path / "mxcp.yml").write_text(SETTINGS)
    for name, sql in MODELS.items():
        (path / "models" / f"{name}.sql").write_text(sql + "\n")
    (path / "models" / "schema.yml").write_text(SCHEMA)
    return Project(path)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = write_project(tmp_path_factory.mktemp("lint") / "lintbreak")
    parsed = project.dbt("parse", check=False)
    # The invalid declaration fails dbt parse through dbt-mxcp's plugin; manifest.json is written first.
    assert parsed.returncode != 0 and "bogus_key: unknown key" in parsed.stdout, parsed.stdout
    assert (project.path / "target" / "manifest.json").is_file()
    yield project


def _json(project: Project, *args: str) -> dict[str, Any]:
    proc = project.mxcp("lint", "--output", "json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return dict(json.loads(proc.stdout))


def test_every_rule_fires_where_the_project_breaks_it(broken: Project) -> None:
    found: dict[str, set[tuple[str | None, str | None]]] = {}
    for f in _json(broken)["findings"]:
        found.setdefault(f["rule"], set()).add((f["endpoint"] or f["node"], f["subject"]))
    assert set(EXPECTED) == set(RULES), "a rule is missing from the broken project"
    assert found == EXPECTED


def test_findings_point_at_the_yml_line(broken: Project) -> None:
    lines = (broken.path / "models" / "schema.yml").read_text().splitlines()
    findings = _json(broken)["findings"]

    def line_of(rule_id: str, endpoint: str | None = None) -> str:
        f = next(f for f in findings if f["rule"] == rule_id and endpoint in (None, f["endpoint"]))
        assert f["file"] == "models/schema.yml"
        return lines[f["line"] - 1]

    assert "- name: order_total" in line_of("missing-tests")
    assert "- {name: customer_id, type: integer, description: The customer.}" in line_of("missing-example",
                                                                                        "tool order_count")
    assert "mxcp: {sensitive: true}" in line_of("misplaced-mxcp")
    assert "tags: [ignored]" in line_of("ignored-tags")
    assert "- {name: note, data_type: varchar}" in line_of("undocumented-column")
    assert line_of("select-star").strip() == "select *"  # not the CTE's, the comment's or the string's
    in_settings = [f for f in findings if f["file"] == "mxcp.yml"]
    assert len(in_settings) == 1  # used by two endpoints, reported once
    settings = (broken.path / "mxcp.yml").read_text().splitlines()
    assert "user.claims.plan" in settings[in_settings[0]["line"] - 1]


def test_text_output_and_exit_code(broken: Project) -> None:
    proc = broken.mxcp("lint", check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert re.search(r"Error: models/schema\.yml:\d+: tool get_customer: policies\.output: returns sensitive "
                     r"field\(s\) email to every caller.*\[unprotected-sensitive-field\]", out)
    assert "  Fix: add an output policy" in out
    assert re.search(r"Lint found 5 errors, \d+ warnings, \d+ info in \d+ endpoint\(s\)", out)
    assert "Traceback" not in proc.stderr


def test_json_output_is_well_formed(broken: Project) -> None:
    doc = _json(broken)
    findings = doc["findings"]
    assert findings and all(set(f) == {"rule", "severity", "message", "hint", "file", "line", "node", "endpoint",
                                       "subject"} for f in findings)
    assert all(f["severity"] == RULES[f["rule"]].severity and f["message"] and f["hint"] for f in findings)
    assert {k: doc["summary"][k] for k in ("error", "warning", "info")} == {
        s: sum(f["severity"] == s for f in findings) for s in ("error", "warning", "info")}
    keys = [(f["rule"], f["file"], f["line"], f["node"], f["endpoint"], f["subject"]) for f in findings]
    assert len(keys) == len(set(keys)), "a finding is repeated"


def test_github_annotations(broken: Project) -> None:
    proc = broken.mxcp("lint", "--output", "github", check=False)
    assert proc.returncode == 1
    annotations = proc.stdout.splitlines()
    assert len(annotations) == len(_json(broken)["findings"])
    pattern = re.compile(r"^::(error|warning|notice) file=([^,:]+)(?:,line=(\d+))?,title=dbt-mxcp ([a-z-]+)::(.+)$")
    for annotation in annotations:
        m = pattern.match(annotation)
        assert m, annotation
        level, file, _, rule_id, message = m.groups()
        assert (broken.path / file).is_file(), file  # relative to where it ran (the workspace)
        assert level == {"error": "error", "warning": "warning", "info": "notice"}[RULES[rule_id].severity]
        assert "%0AFix: " in message and "\n" not in message
    star = next(a for a in annotations if "dbt-mxcp select-star" in a)
    assert star.startswith("::warning file=models/schema.yml,line=")


def test_severity_filters_what_is_shown_not_the_exit_code(broken: Project) -> None:
    errors = broken.mxcp("lint", "--severity", "error", check=False)
    assert errors.returncode == 1
    shown = [ln for ln in errors.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d  (Error|Warning|Info):", ln)]
    assert shown and all("  Error: " in ln for ln in shown)
    assert re.search(r"\d+ finding\(s\) below --severity error not shown", errors.stdout)
    warnings = _json(broken, "--severity", "warning")["findings"]
    assert warnings and {f["severity"] for f in warnings} == {"error", "warning"}


def test_no_manifest_is_a_clear_error(tmp_path: Path) -> None:
    project = write_project(tmp_path / "unparsed")
    proc = project.mxcp("lint", check=False)
    assert proc.returncode == 2
    assert "Error: no dbt manifest" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["shop", "integration_tests"])
def test_the_repo_projects_lint_without_errors(name: str, tmp_path: Path) -> None:
    src = REPO / "examples" / "shop" if name == "shop" else REPO / name
    project = Project(copy_project(src, tmp_path / name))
    if name == "shop":
        run([sys.executable, "scripts/generate_seeds.py"], project.path)
    else:
        project.dbt("deps")
    project.dbt("parse")
    proc = project.mxcp("lint", check=False)
    assert proc.returncode == 0, proc.stdout
    assert "Error:" not in proc.stdout
    assert re.search(r"Lint found \d+ warnings?, \d+ info in \d+ endpoint\(s\)", proc.stdout)
