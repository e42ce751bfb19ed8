"""A synthetic but realistically shaped dbt manifest (v12) for the registry benchmarks.

Every model carries the full set of keys dbt 1.11 writes (config, columns with constraints,
checksums, raw_code, ...), so the file is about as large per model as a real one. Per model:

* 8 typed columns; a ``not_null`` test on ``c0`` for every model, on ``c1`` for every other
  model, and a ``unique`` test on ``c0`` for every third (tests are nodes too);
* one tool in ``config.meta.mxcp``: model-backed, filtering by its ``c0`` column and returning
  ``{type: object}`` (the registry derives the row type from the columns);
* every 10th model's tool reads ``source.code`` with a ``ref()`` to another model instead;
* every 20th model's tool has an input policy (a CEL ``deny`` rule).

Besides the models: one source table per 50 models, one exposure per 100 models (no
endpoints), ``n_macros`` dummy macros (a real manifest carries ~500: dbt's own and the
adapter's), and ``parent_map`` / ``child_map``.

    python bench/synth.py --models 5000 --out /tmp/synth5000   # writes /tmp/synth5000/target/manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "https://schemas.getdbt.com/dbt/manifest/v12.json"
DBT_VERSION = "1.11.16"
COLUMN_TYPES = ("integer", "varchar", "date", "double", "boolean", "timestamp", "bigint", "decimal(12,2)")
N_COLUMNS = len(COLUMN_TYPES)
CREATED_AT = 1795607590.5


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _model_config(meta: dict[str, Any]) -> dict[str, Any]:
    # The keys dbt 1.11 writes for a model's config, in its order.
    return {
        "enabled": True, "alias": None, "schema": None, "database": None, "tags": [], "meta": meta,
        "group": None, "static_analysis": None, "materialized": "table", "incremental_strategy": None,
        "batch_size": None, "lookback": 1, "begin": None, "persist_docs": {}, "post-hook": [], "pre-hook": [],
        "quoting": {}, "column_types": {}, "full_refresh": None, "unique_key": None, "on_schema_change": "ignore",
        "on_configuration_change": "apply", "grants": {}, "packages": [], "docs": {"show": True, "node_color": None},
        "contract": {"enforced": False, "alias_types": True}, "event_time": None, "concurrent_batches": None,
        "access": "protected", "freshness": None,
    }


def _column(name: str, data_type: str, description: str, not_null: bool) -> dict[str, Any]:
    constraints: list[dict[str, Any]] = [{"type": "not_null", "name": None, "expression": None, "warn_unenforced": True,
                    "warn_unsupported": True, "to": None, "to_columns": []}] if not_null else []
    return {"name": name, "description": description, "meta": {}, "data_type": data_type,
            "constraints": constraints, "quote": None, "config": {"meta": {}, "tags": []}, "tags": [],
            "granularity": None, "doc_blocks": []}


def _tool(i: int, n_models: int) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": f"get_m_{i}",
        "description": f"Rows of m_{i} for one c0.",
        "parameters": [{"name": "c0", "type": "integer", "description": "The key to look up"}],
        "return": {"type": "object"},
    }
    if i % 10 == 0:
        j = (i + 1) % n_models if n_models > 1 else i
        tool["source"] = {"code": f"select * from {{{{ ref('m_{j}') }}}} where c0 = $c0"}
        tool["return"] = {"type": "array", "items": {"type": "object"}}
    if i % 20 == 0:
        tool["policies"] = {"input": [{"condition": "!('x' in user.groups)", "action": "deny", "reason": "no"}]}
    return tool


def _model(project: str, i: int, n_models: int, parents: list[str], source_parent: str | None) -> dict[str, Any]:
    name = f"m_{i}"
    folder = f"layer_{i % 10}"
    refs = [f"m_{p.rsplit('_', 1)[1]}" for p in parents]
    selects = [f"select * from {{{{ ref('{r}') }}}}" for r in refs]
    if source_parent is not None:
        _, _, src, table = source_parent.split(".")
        selects.append(f"select * from {{{{ source('{src}', '{table}') }}}}")
    raw_code = (f"-- model {name}\nwith base as (\n    " + ("\n    union all\n    ".join(selects) or "select 1 as c0")
                + "\n)\nselect\n    " + ",\n    ".join(f"cast(c{k} as {t}) as c{k}" for k, t in enumerate(COLUMN_TYPES))
                + "\nfrom base\n")
    meta = {"mxcp": {"tools": [_tool(i, n_models)]}}
    columns = {f"c{k}": _column(f"c{k}", t, f"Column {k} of {name}." if k % 2 == 0 else "", k == 0)
               for k, t in enumerate(COLUMN_TYPES)}
    return {
        "database": "db", "schema": "main", "name": name, "resource_type": "model", "package_name": project,
        "path": f"{folder}/{name}.sql", "original_file_path": f"models/{folder}/{name}.sql",
        "unique_id": f"model.{project}.{name}", "fqn": [project, folder, name], "alias": name,
        "checksum": {"name": "sha256", "checksum": _sha(raw_code)}, "config": _model_config(meta), "tags": [],
        "description": f"Model number {i}: one row per key, with seven attributes.", "columns": columns,
        "meta": meta, "group": None, "docs": {"show": True, "node_color": None},
        "patch_path": f"{project}://models/schema_{i}.yml", "build_path": None,
        "unrendered_config": {"materialized": "table", "meta": meta}, "created_at": CREATED_AT,
        "relation_name": f'"db"."main"."{name}"', "raw_code": raw_code, "doc_blocks": [], "language": "sql",
        "refs": [{"name": r, "package": None, "version": None} for r in refs],
        "sources": [list(source_parent.split(".")[2:])] if source_parent else [], "metrics": [], "functions": [],
        "depends_on": {"macros": [], "nodes": parents + ([source_parent] if source_parent else [])},
        "compiled_path": None, "contract": {"enforced": False, "alias_types": True, "checksum": None},
        "access": "protected", "constraints": [], "version": None, "latest_version": None,
        "deprecation_date": None, "primary_key": ["c0"], "time_spine": None,
    }


def _test(project: str, i: int, test: str, column: str) -> dict[str, Any]:
    model_id = f"model.{project}.m_{i}"
    name = f"{test}_m_{i}_{column}"
    return {
        "database": "db", "schema": "main_dbt_test__audit", "name": name, "resource_type": "test",
        "package_name": project, "path": f"{name}.sql", "original_file_path": f"models/schema_{i}.yml",
        "unique_id": f"test.{project}.{name}.{_sha(name)[:10]}", "fqn": [project, name], "alias": name,
        "checksum": {"name": "none", "checksum": ""},
        "config": {"enabled": True, "alias": None, "schema": "dbt_test__audit", "database": None, "tags": [],
                   "meta": {}, "group": None, "static_analysis": None, "materialized": "test", "severity": "ERROR",
                   "store_failures": None, "store_failures_as": None, "where": None, "limit": None,
                   "fail_calc": "count(*)", "warn_if": "!= 0", "error_if": "!= 0"},
        "tags": [], "description": "", "columns": {}, "meta": {}, "group": None,
        "docs": {"show": True, "node_color": None}, "patch_path": None, "build_path": None,
        "unrendered_config": {}, "created_at": CREATED_AT, "relation_name": None,
        "raw_code": f"{{{{ test_{test}(**_dbt_generic_test_kwargs) }}}}", "doc_blocks": [], "language": "sql",
        "refs": [{"name": f"m_{i}", "package": None, "version": None}], "sources": [], "metrics": [],
        "functions": [], "depends_on": {"macros": [f"macro.dbt.test_{test}"], "nodes": [model_id]},
        "compiled_path": None, "contract": {"enforced": False, "alias_types": True, "checksum": None},
        "column_name": column, "file_key_name": f"models.m_{i}", "attached_node": model_id,
        "test_metadata": {"name": test, "kwargs": {"column_name": column,
                                                   "model": f"{{{{ get_where_subquery(ref('m_{i}')) }}}}"},
                          "namespace": None},
    }


def _source(project: str, k: int) -> dict[str, Any]:
    name = f"raw_{k}"
    return {
        "database": "db", "schema": "raw", "name": name, "resource_type": "source", "package_name": project,
        "path": "models/sources.yml", "original_file_path": "models/sources.yml",
        "unique_id": f"source.{project}.raw.{name}", "fqn": [project, "raw", name], "source_name": "raw",
        "source_description": "Raw data.", "loader": "", "identifier": name, "quoting": {
            "database": None, "schema": None, "identifier": None, "column": None},
        "loaded_at_field": None, "loaded_at_query": None, "freshness": {
            "warn_after": {"count": None, "period": None}, "error_after": {"count": None, "period": None},
            "filter": None},
        "external": None, "description": f"Raw table {k}.",
        "columns": {f"c{c}": _column(f"c{c}", t, "", False) for c, t in enumerate(COLUMN_TYPES)},
        "meta": {}, "source_meta": {}, "tags": [], "config": {"enabled": True, "event_time": None, "meta": {},
                                                             "tags": [], "freshness": None, "loaded_at_field": None,
                                                             "loaded_at_query": None},
        "patch_path": None, "unrendered_config": {}, "relation_name": f'"db"."raw"."{name}"',
        "created_at": CREATED_AT, "unrendered_database": None, "unrendered_schema": None, "doc_blocks": [],
    }


def _exposure(project: str, k: int, parents: list[str]) -> dict[str, Any]:
    name = f"dashboard_{k}"
    return {
        "name": name, "resource_type": "exposure", "package_name": project, "path": "exposures.yml",
        "original_file_path": "models/exposures.yml", "unique_id": f"exposure.{project}.{name}",
        "fqn": [project, name], "type": "dashboard", "owner": {"email": "data@example.com", "name": "Data"},
        "description": f"Dashboard {k}.", "label": None, "maturity": "medium", "meta": {}, "tags": [],
        "config": {"enabled": True, "tags": [], "meta": {}}, "unrendered_config": {}, "url": None,
        "depends_on": {"macros": [], "nodes": parents},
        "refs": [{"name": p.rsplit(".", 1)[1], "package": None, "version": None} for p in parents],
        "sources": [], "metrics": [], "created_at": CREATED_AT,
    }


def _macro(k: int) -> dict[str, Any]:
    package = ("dbt", "dbt_duckdb", "dbt_utils")[k % 3]
    name = f"macro_{k}"
    sql = (f"{{% macro {name}(relation, columns=none, where=none) -%}}\n"
           f"  {{{{ return(adapter.dispatch('{name}', '{package}')(relation, columns, where)) }}}}\n"
           f"{{%- endmacro %}}\n\n"
           f"{{% macro default__{name}(relation, columns=none, where=none) -%}}\n"
           "  {%- set cols = columns or adapter.get_columns_in_relation(relation) -%}\n"
           "  select {% for c in cols %}{{ c.name if c.name is defined else c }}{% if not loop.last %}, "
           "{% endif %}{% endfor %}\n  from {{ relation }}\n  {% if where %}where {{ where }}{% endif %}\n"
           "{%- endmacro %}\n")
    return {
        "name": name, "resource_type": "macro", "package_name": package,
        "path": f"macros/generated/{name}.sql", "original_file_path": f"macros/generated/{name}.sql",
        "unique_id": f"macro.{package}.{name}", "macro_sql": sql,
        "depends_on": {"macros": [f"macro.{package}.default__{name}"] if k % 2 else []}, "description": "",
        "meta": {}, "docs": {"show": True, "node_color": None}, "config": {"meta": {}, "docs": {
            "show": True, "node_color": None}},
        "patch_path": None, "arguments": [], "created_at": CREATED_AT, "supported_languages": None,
    }


def generate(n_models: int, *, project: str = "bench_proj", n_macros: int = 500) -> dict[str, Any]:
    """A manifest dict with `n_models` models, each declaring one tool (see the module docstring)."""
    nodes: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    exposures: dict[str, Any] = {}
    parent_map: dict[str, list[str]] = {}
    child_map: dict[str, list[str]] = {}

    for k in range(max(1, n_models // 50)):
        src = _source(project, k)
        sources[src["unique_id"]] = src
    source_ids = list(sources)

    for i in range(n_models):
        parents = [f"model.{project}.m_{p}" for p in sorted({i - 1, i - 7}) if p >= 0]
        source_parent = source_ids[(i // 50) % len(source_ids)] if i % 50 == 0 else None
        model = _model(project, i, n_models, parents, source_parent)
        nodes[model["unique_id"]] = model
        tests = [("not_null", "c0")]
        if i % 2 == 0:
            tests.append(("not_null", "c1"))
        if i % 3 == 0:
            tests.append(("unique", "c0"))
        for test, column in tests:
            node = _test(project, i, test, column)
            nodes[node["unique_id"]] = node

    for k in range(max(1, n_models // 100)):
        parents = [f"model.{project}.m_{(k * 100 + d) % n_models}" for d in (0, 3, 9)]
        exp = _exposure(project, k, sorted(set(parents)))
        exposures[exp["unique_id"]] = exp

    macros = {m["unique_id"]: m for m in (_macro(k) for k in range(n_macros))}

    for uid in list(nodes) + list(sources) + list(exposures):
        parent_map.setdefault(uid, [])
        child_map.setdefault(uid, [])
    for section in (nodes, exposures):
        for uid, node in section.items():
            for parent in node["depends_on"]["nodes"]:
                parent_map[uid].append(parent)
                child_map[parent].append(uid)
    for mapping in (parent_map, child_map):
        for uid in mapping:
            mapping[uid].sort()

    return {
        "metadata": {
            "dbt_schema_version": SCHEMA_VERSION, "dbt_version": DBT_VERSION,
            "generated_at": "2025-01-01T00:00:00.000000Z", "invocation_id": str(uuid.UUID(int=n_models)),
            "invocation_started_at": "2025-01-01T00:00:00.000000Z", "env": {}, "project_name": project,
            "project_id": _sha(project)[:32], "user_id": None, "send_anonymous_usage_stats": False,
            "adapter_type": "duckdb",
            "quoting": {"database": True, "schema": True, "identifier": True, "column": None},
            "run_started_at": "2025-01-01T00:00:00.000000+00:00",
        },
        "nodes": nodes, "sources": sources, "macros": macros, "docs": {}, "exposures": exposures, "metrics": {},
        "groups": {}, "selectors": {}, "disabled": {}, "parent_map": parent_map, "child_map": child_map,
        "group_map": {}, "saved_queries": {}, "semantic_models": {}, "unit_tests": {}, "functions": {},
    }


def write(n_models: int, project_dir: Path, **kwargs: Any) -> Path:
    """Write ``<project_dir>/target/manifest.json`` (one line, as dbt writes it); returns its path."""
    return write_manifest(generate(n_models, **kwargs), project_dir)


def write_manifest(manifest: dict[str, Any], project_dir: Path) -> Path:
    """Write a manifest dict (from `generate`, possibly edited) to ``<project_dir>/target/manifest.json``."""
    target = project_dir / "target"
    target.mkdir(parents=True, exist_ok=True)
    path = target / "manifest.json"
    with path.open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return path


def relations(manifest: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Every model and source table of `manifest` as (schema, name, [(column, data_type), ...]).

    What a warehouse must hold for the endpoints to run (bench/scale.py creates them in DuckDB).
    """
    out = []
    for node in (*manifest["nodes"].values(), *manifest["sources"].values()):
        if node["resource_type"] == "model":
            name = node["alias"]
        elif node["resource_type"] == "source":
            name = node["identifier"]
        else:
            continue
        out.append((node["schema"], name, [(c["name"], c["data_type"]) for c in node["columns"].values()]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--macros", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True, help="project dir; the manifest goes to OUT/target/")
    args = parser.parse_args()
    path = write(args.models, args.out, n_macros=args.macros)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
