"""Lint's scanners on their own: stars that pick result columns, unguarded reads in CEL conditions,
and every rule documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbt_mxcp.cli.lint import LEVELS
from dbt_mxcp.lint import RULES, SEVERITIES, USER_ROOT, Root, select_stars, unguarded_fields
from dbt_mxcp.types import TypeDef

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("sql", "count"), [
    ("select * from t", 1),
    ("select t.* from t", 1),
    ('select "t".* from t', 1),
    ("select a, * exclude (b) from t", 1),
    ("SELECT DISTINCT * FROM t", 1),
    ("select * from a union all select * from b", 2),
    ("from t where a = 1", 1),  # DuckDB's bare from: all columns
    ("select count(*) from t", 0),
    ("select a * 2 as b from t", 0),
    ("with x as (select * from t) select a from x", 0),
    ("select a from (select * from t) as s", 0),
    ("select 'select *' as s, a from t -- select *\n", 0),
    ("/* select * */ select a from t", 0),
    ("select $$select *$$ as s", 0),
])
def test_select_stars(sql: str, count: int) -> None:
    assert len(select_stars(sql)) == count


def test_select_star_offset_is_the_star() -> None:
    sql = "with x as (select * from t)\nselect *\nfrom x"
    assert select_stars(sql) == [sql.rindex("*")]


USER = {"user": USER_ROOT}
ROWS = Root(TypeDef(type="array", items=TypeDef(type="object", properties={"a": TypeDef(type="integer")})))
ROW = Root(TypeDef(type="object", properties={"total": TypeDef(type="number", nullable=True),
                                             "n": TypeDef(type="integer")}), every_field=True)
OPTIONAL = Root(TypeDef(type="string"), nullable=True)


@pytest.mark.parametrize(("condition", "roots", "expected"), [
    ("user.claims.tenant == 'a'", USER, [("user.claims.tenant", "may be absent")]),
    ("user.claims['tenant'] == 'a'", USER, [("user.claims.tenant", "may be absent")]),
    ("user.claims.tenant.startsWith('a')", USER, [("user.claims.tenant", "may be absent")]),
    ("has(user.claims.tenant) && user.claims.tenant == 'a'", USER, []),
    ("'tenant' in user.claims && user.claims.tenant == 'a'", USER, []),
    ("user.role != 'admin' && !('hr' in user.groups)", USER, []),
    ("user.email == 'a@example.com'", USER, []),  # == handles null
    ("user.email.endsWith('@example.com')", USER, [("user.email", "may be null")]),
    ("user.email != null && user.email.endsWith('@example.com')", USER, []),
    ("user.department == 'x'", USER, [("user.department", "is never there")]),
    ("response.a > 1", {"response": ROWS}, [("response.a", "is never there")]),
    ("response.all(r, r.a > 1)", {"response": ROWS}, []),
    ("response.total > 100.0", {"response": ROW}, [("response.total", "may be null")]),
    ("response.n > 1 && response.total == null", {"response": ROW}, []),
    ("response.other == 1", {"response": ROW}, [("response.other", "may be absent")]),
    ("size(q) > 3", {"q": OPTIONAL}, [("q", "may be null")]),
    ("q == 'x' || q in ['y']", {"q": OPTIONAL}, []),
    ("[1, 2].exists(x, x > 1)", USER, []),  # comprehension variables are not checked
    ("user.role != 'admin' // user.claims.tenant == 'a'", USER, []),  # a comment reads nothing
])
def test_unguarded_fields(condition: str, roots: dict[str, Root], expected: list[tuple[str, str]]) -> None:
    found = unguarded_fields(condition, roots)
    assert [(path, re.split(r"[;:]", problem)[0]) for path, problem in found] == expected, found


def test_every_rule_is_documented_with_its_severity_and_title() -> None:
    text = (DOCS / "lint.md").read_text()
    for rule in RULES.values():
        row = f"| [`{rule.id}`](#{rule.id}) | {rule.severity} | {rule.title} |"
        assert row in text.splitlines(), f"docs/lint.md: no table row {row}"
        assert re.search(rf"^### `{rule.id}`\n\n\*\*{rule.severity}\.\*\*", text, re.MULTILINE), rule.id


def test_the_severity_option_offers_every_severity() -> None:
    assert LEVELS == SEVERITIES


def test_github_annotations_are_escaped_and_well_formed_without_a_file(tmp_path: Path) -> None:
    from dbt_mxcp.cli.output import github_annotation

    bare = github_annotation("warning", "50% done\nnext", project_dir=tmp_path, title="drift: a, b")
    assert bare == "::warning title=drift%3A a%2C b::50%25 done%0Anext"
    located = github_annotation("error", "m", project_dir=tmp_path, file="models/x.yml", line_number=3)
    assert located.startswith("::error file=") and located.endswith("models/x.yml,line=3::m")
