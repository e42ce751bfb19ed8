"""dbt_mxcp.sql: $parameters, rendering dbt Jinja from the manifest, and the SQL shapes endpoints run."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from dbt_mxcp.manifest import Manifest, RefError
from dbt_mxcp.sql import (
    RenderContext,
    SqlError,
    as_subquery,
    find_parameters,
    model_backed_sql,
    single_statement,
    table_function_sql,
)

# ---- find_parameters ---------------------------------------------------------------------------


def test_parameters_in_order_of_first_use_without_repeats() -> None:
    sql = "select * from t where b = $beta and a = $alpha or b2 = $beta and c = $_c1"
    assert find_parameters(sql) == ["beta", "alpha", "_c1"]


def test_no_parameters() -> None:
    assert find_parameters("select 1") == []


def test_parameters_inside_single_quoted_strings_ignored() -> None:
    assert find_parameters("select '$x' as a, $y as b") == ["y"]


def test_doubled_quote_inside_string_does_not_end_it() -> None:
    assert find_parameters("select 'it''s $not_me' as a, $me as b") == ["me"]


def test_parameters_inside_quoted_identifiers_ignored() -> None:
    assert find_parameters('select "price$usd", "a""$b" from t where id = $id') == ["id"]


def test_parameters_inside_line_comments_ignored() -> None:
    sql = "select *  -- filter on $old\nfrom t where id = $id -- and $other"
    assert find_parameters(sql) == ["id"]


def test_quote_inside_a_comment_does_not_open_a_string() -> None:
    sql = "-- don't bind $x here\nselect $y /* it's $z */ , $w"
    assert find_parameters(sql) == ["y", "w"]


def test_parameters_inside_block_comments_ignored() -> None:
    sql = "select /* $hidden\n spans lines */ $shown"
    assert find_parameters(sql) == ["shown"]


def test_comment_markers_inside_strings_are_text() -> None:
    assert find_parameters("select '--', $a, '/*', $b, '*/'") == ["a", "b"]


def test_parameters_inside_dollar_quoted_strings_ignored() -> None:
    assert find_parameters("select $$ costs $price $$ as s, $real") == ["real"]


def test_parameters_inside_tagged_dollar_quoted_strings_ignored() -> None:
    sql = "select $body$ it's $x and $$ inside $body$ as s, $y"
    assert find_parameters(sql) == ["y"]


def test_dollar_quote_parsing_agrees_with_duckdb() -> None:
    # The same text run in DuckDB: the dollar-quoted strings are literal text, and $y is a parameter.
    sql = "select $body$ it's $x and $$ inside $body$ as s, $y as y"
    con = duckdb.connect()
    assert con.execute(sql, {"y": 5}).fetchall() == [(" it's $x and $$ inside ", 5)]
    assert find_parameters(sql) == ["y"]


def test_positional_parameter_rejected() -> None:
    with pytest.raises(SqlError, match=r"positional"):
        find_parameters("select * from t where id = $1")


def test_positional_looking_text_inside_string_is_fine() -> None:
    assert find_parameters("select '$1' as price, $id") == ["id"]


def test_nested_block_comment_hides_parameters_as_duckdb_does() -> None:
    # DuckDB nests block comments: the whole "/* a /* b */ $x */" is one comment.
    sql = "select 1 as one /* outer /* inner */ $x */"
    assert duckdb.connect().execute(sql).fetchall() == [(1,)]
    assert find_parameters(sql) == []


def test_escape_string_with_backslash_quote_is_one_string_as_duckdb_reads_it() -> None:
    # DuckDB's E'...' strings escape a quote with a backslash.
    sql = "select E'it\\'s $x' as s, $y as y"
    assert duckdb.connect().execute(sql, {"y": 1}).fetchall() == [("it's $x", 1)]
    assert find_parameters(sql) == ["y"]


# ---- rendering ---------------------------------------------------------------------------------


def _node(resource_type: str, package: str, name: str, relation: str | None, **extra: Any) -> dict[str, Any]:
    uid = f"{resource_type}.{package}.{name}"
    return {"unique_id": uid, "name": name, "resource_type": resource_type, "package_name": package,
            "relation_name": relation, **extra}


MANIFEST_DATA: dict[str, Any] = {
    "metadata": {"project_name": "shop"},
    "nodes": {
        # The package's `customers` comes first: the root project's must still win.
        "model.crm_pkg.customers": _node("model", "crm_pkg", "customers", '"warehouse"."crm"."customers"'),
        "model.shop.customers": _node("model", "shop", "customers", '"warehouse"."main"."customers"'),
        "model.crm_pkg.helper": _node("model", "crm_pkg", "helper", '"warehouse"."crm"."helper"'),
        "seed.shop.countries": _node("seed", "shop", "countries", '"warehouse"."main"."countries"'),
        "analysis.shop.report": _node("analysis", "shop", "report", None),
    },
    "sources": {
        "source.shop.raw.orders": {"unique_id": "source.shop.raw.orders", "name": "orders", "source_name": "raw",
                                   "resource_type": "source", "package_name": "shop",
                                   "relation_name": '"warehouse"."raw"."orders"'},
    },
}


@pytest.fixture
def ctx() -> RenderContext:
    return RenderContext(Manifest(MANIFEST_DATA), {"min_total": 100, "region": "eu"},
                         {"name": "dev", "schema": "main"})


def test_ref_renders_the_relation_and_records_the_node(ctx: RenderContext) -> None:
    used: list[str] = []
    out = ctx.render("select * from {{ ref('helper') }} where id = $id", None, used)
    assert out == 'select * from "warehouse"."crm"."helper" where id = $id'
    assert used == ["model.crm_pkg.helper"]


def test_ref_prefers_the_root_project_on_a_name_clash(ctx: RenderContext) -> None:
    used: list[str] = []
    assert ctx.render("{{ ref('customers') }}", None, used) == '"warehouse"."main"."customers"'
    assert used == ["model.shop.customers"]


def test_ref_with_package_picks_that_package(ctx: RenderContext) -> None:
    used: list[str] = []
    assert ctx.render("{{ ref('crm_pkg', 'customers') }}", None, used) == '"warehouse"."crm"."customers"'
    assert used == ["model.crm_pkg.customers"]


def test_ref_to_a_seed(ctx: RenderContext) -> None:
    used: list[str] = []
    assert ctx.render("{{ ref('countries') }}", None, used) == '"warehouse"."main"."countries"'
    assert used == ["seed.shop.countries"]


def test_every_relation_read_is_recorded(ctx: RenderContext) -> None:
    used: list[str] = []
    ctx.render("select * from {{ ref('customers') }} join {{ source('raw', 'orders') }} using (id)", None, used)
    assert used == ["model.shop.customers", "source.shop.raw.orders"]


def test_unknown_ref_is_an_error_naming_it(ctx: RenderContext) -> None:
    with pytest.raises((SqlError, RefError), match=r"ref\('nope'\)"):
        ctx.render("select * from {{ ref('nope') }}", None, [])


def test_ref_with_unknown_package_is_an_error_naming_it(ctx: RenderContext) -> None:
    with pytest.raises((SqlError, RefError), match="other_pkg"):
        ctx.render("select * from {{ ref('other_pkg', 'customers') }}", None, [])


def test_source_renders_the_relation(ctx: RenderContext) -> None:
    used: list[str] = []
    assert ctx.render("{{ source('raw', 'orders') }}", None, used) == '"warehouse"."raw"."orders"'
    assert used == ["source.shop.raw.orders"]


def test_unknown_source_is_an_error_naming_it(ctx: RenderContext) -> None:
    with pytest.raises((SqlError, RefError), match=r"source\('raw', 'refunds'\)"):
        ctx.render("{{ source('raw', 'refunds') }}", None, [])


def test_this_is_the_host_relation(ctx: RenderContext) -> None:
    host = ctx.manifest.node("model.shop.customers")
    used: list[str] = []
    assert ctx.render("select * from {{ this }}", host, used) == 'select * from "warehouse"."main"."customers"'
    assert "model.shop.customers" in used


def test_this_without_a_host_relation_is_a_clear_error(ctx: RenderContext) -> None:
    host = ctx.manifest.node("analysis.shop.report")
    with pytest.raises(SqlError, match=r"this"):
        ctx.render("select * from {{ this }}", host, [])


def test_this_without_a_host_is_an_error(ctx: RenderContext) -> None:
    with pytest.raises(SqlError, match=r"this"):
        ctx.render("select * from {{ this }}", None, [])


def test_var_with_value_and_default(ctx: RenderContext) -> None:
    out = ctx.render("{{ var('min_total') }} {{ var('missing', 7) }} {{ var('region', 'us') }}", None, [])
    assert out == "100 7 eu"


def test_missing_var_is_an_error_naming_it(ctx: RenderContext) -> None:
    with pytest.raises(SqlError, match=r"var\('cutoff'\)"):
        ctx.render("select {{ var('cutoff') }}", None, [])


def test_env_var_set(ctx: RenderContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXCP_TEST_SCHEMA", "analytics")
    assert ctx.render("{{ env_var('MXCP_TEST_SCHEMA') }}", None, []) == "analytics"


def test_env_var_unset_uses_default(ctx: RenderContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXCP_TEST_UNSET", raising=False)
    assert ctx.render("{{ env_var('MXCP_TEST_UNSET', 'fallback') }}", None, []) == "fallback"


def test_env_var_unset_without_default_is_an_error(ctx: RenderContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXCP_TEST_UNSET", raising=False)
    with pytest.raises(SqlError, match="MXCP_TEST_UNSET"):
        ctx.render("{{ env_var('MXCP_TEST_UNSET') }}", None, [])


def test_secret_env_var_refused_even_when_set(ctx: RenderContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_ENV_SECRET_PASSWORD", "hunter2")
    with pytest.raises(SqlError) as info:
        ctx.render("select '{{ env_var('DBT_ENV_SECRET_PASSWORD') }}'", None, [])
    assert "DBT_ENV_SECRET_PASSWORD" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_target_available(ctx: RenderContext) -> None:
    assert ctx.render("{{ target.name }}", None, []) == "dev"


def test_jinja_syntax_error_names_the_line(ctx: RenderContext) -> None:
    with pytest.raises(SqlError, match=r"line 3"):
        ctx.render("select *\nfrom t\nwhere {{ ref('customers' }}", None, [])


def test_undefined_name_is_an_error(ctx: RenderContext) -> None:
    with pytest.raises(SqlError, match="config"):
        ctx.render("{{ config(materialized='table') }}", None, [])


def test_parameters_survive_rendering(ctx: RenderContext) -> None:
    out = ctx.render("select * from {{ ref('customers') }} where name ilike '%' || $query || '%'", None, [])
    assert out.endswith("where name ilike '%' || $query || '%'")


# ---- SQL shapes, run in DuckDB -----------------------------------------------------------------


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute('create table customers (customer_id integer, "order" integer, name varchar)')
    c.execute("insert into customers values (1, 10, 'Alice'), (2, 20, 'Bob'), (3, 10, 'Carol')")
    return c


def test_model_backed_sql_without_filters_reads_every_row(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(model_backed_sql("customers", []) + " order by customer_id").fetchall()
    assert [r[2] for r in rows] == ["Alice", "Bob", "Carol"]


def test_model_backed_sql_filters_by_equality(con: duckdb.DuckDBPyConnection) -> None:
    sql = model_backed_sql("customers", ["customer_id"])
    assert find_parameters(sql) == ["customer_id"]
    assert con.execute(sql, {"customer_id": 2}).fetchall() == [(2, 20, "Bob")]


def test_model_backed_sql_quotes_columns_and_combines_filters(con: duckdb.DuckDBPyConnection) -> None:
    sql = model_backed_sql("customers", ["order", "name"])
    assert con.execute(sql, {"order": 10, "name": "Carol"}).fetchall() == [(3, 10, "Carol")]


def test_table_function_sql_passes_parameters_in_declared_order(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create macro diff(a, b) as table select a - b as d")
    sql = table_function_sql("diff", ["a", "b"])
    assert con.execute(sql, {"a": 10, "b": 3}).fetchall() == [(7,)]
    assert con.execute(table_function_sql("diff", ["b", "a"]), {"a": 10, "b": 3}).fetchall() == [(-7,)]


def test_table_function_sql_without_parameters(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create macro everyone() as table select name from customers")
    assert sorted(con.execute(table_function_sql("everyone", [])).fetchall()) == [("Alice",), ("Bob",), ("Carol",)]


@pytest.mark.parametrize(
    "sql",
    [
        "select 42 as x",
        "select 42 as x;",
        "select 42 as x ;; \n",
        "select 42 as x -- the answer",
        "select 42 as x\n-- trailing comment line\n",
        "select 42 as x /* block */",
        "with a as (select 42 as x) select x from a;",
    ],
)
def test_as_subquery_runs_in_duckdb(sql: str) -> None:
    con = duckdb.connect()
    wrapped = as_subquery(sql)
    assert con.execute(wrapped).fetchall() == [(42,)]
    # and it can be wrapped once more, as the engine may do
    assert con.execute(f"select count(*) from ({wrapped})").fetchall() == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        "select 42 as x; -- done",
        "select 42 as x;\n-- end of file\n",
        "select 42 as x; /* end */",
    ],
)
def test_as_subquery_drops_a_semicolon_followed_by_a_comment(sql: str) -> None:
    # Each of these runs as-is in DuckDB; wrapped, it must run too.
    con = duckdb.connect()
    assert con.execute(sql).fetchall() == [(42,)]
    assert con.execute(as_subquery(sql)).fetchall() == [(42,)]


def test_as_subquery_keeps_parameters_bindable() -> None:
    con = duckdb.connect()
    wrapped = as_subquery("select $a + 1 as x;")
    assert find_parameters(wrapped) == ["a"]
    assert con.execute(wrapped, {"a": 41}).fetchall() == [(42,)]


def test_host_is_a_read_relation_only_where_this_is_used(ctx: RenderContext) -> None:
    host = ctx.manifest.node("model.shop.customers")
    used: list[str] = []
    ctx.render("select * from {{ ref('helper') }}", host, used)
    assert used == ["model.crm_pkg.helper"]
    assert ctx.render("{{ this.identifier }}", host, used) == "customers"
    assert used[-1] == "model.shop.customers"


@pytest.mark.parametrize("sql", ["select 1; select 2", "select 1;\nselect $x; -- two"])
def test_several_statements_are_refused(sql: str) -> None:
    with pytest.raises(SqlError, match="more than one statement"):
        single_statement(sql)


@pytest.mark.parametrize(("sql", "kept"), [
    ("select ';' as s;", "select ';' as s"),
    ("select 1 /* ; */", "select 1 /* ; */"),
    ("select $$a;b$$ as s ; ;", "select $$a;b$$ as s"),
])
def test_single_statement_keeps_semicolons_in_strings_and_comments(sql: str, kept: str) -> None:
    assert single_statement(sql) == kept


def test_empty_sql_is_refused() -> None:
    with pytest.raises(SqlError, match="empty"):
        single_statement("  -- nothing\n ; ")


@pytest.mark.parametrize(("simple", "full"), [
    ("select * from {{ ref('helper') }}", "select * from {% if true %}{{ ref('helper') }}{% endif %}"),
    ('from {{ source("raw", "orders") }}', "from {{ source('raw', 'orders') | string }}"),
    ("{{ var('min_total') }} {{ target.name }}", "{{ var('min_total') | int }} {{ target['name'] }}"),
])
def test_simple_expressions_render_as_jinja_does(ctx: RenderContext, simple: str, full: str) -> None:
    # The first form takes the fast path (no template compiled), the second goes through Jinja.
    assert ctx.render(simple, None, []) == ctx.render(full, None, [])


def test_whitespace_control_is_left_to_jinja(ctx: RenderContext) -> None:
    assert ctx.render("a\n{{- var('region') -}}\nb", None, []) == "aeub"
