"""`validate`: the plugin's checks plus, against the warehouse, that every endpoint's SQL prepares and
returns the columns and types its return type promises; and whether dbt's artifacts are stale."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import describe
from .errors import CallError, MxcpError
from .load import Loaded
from .registry import Endpoint
from .sql import as_subquery
from .types import TypeDef, to_bind_value, type_from_data_type
from .warehouse import Warehouse, open_warehouse

_SAMPLES = {"date": "2024-01-01", "time": "12:00:00", "date-time": "2024-01-01T00:00:00+00:00",
            "timestamp": "2024-01-01T00:00:00", "email": "a@example.com", "uri": "https://example.com",
            "duration": "P1D"}


# yml files at the project root that `dbt parse` does not read.
# Files at the project root that do not change the manifest (selectors.yml is read afresh by selection).
NOT_DBT_INPUTS = {"mxcp.yml", "profiles.yml", "packages.yml", "package-lock.yml", "dependencies.yml",
                  "selectors.yml"}


@dataclass(frozen=True)
class Finding:
    """One result of validation: an error fails `validate`; a warning is shown."""

    level: str  # error | warning
    where: str
    message: str


def stale_artifacts(loaded: Loaded) -> Iterator[Finding]:
    """Warnings when the registry artifact or manifest is older than the files it was built from."""
    target = loaded.project.target_path
    manifest_path = target / "manifest.json"
    built = manifest_path.stat().st_mtime
    newer = [p for p in _project_files(loaded) if p.stat().st_mtime > built]
    if newer:
        shown = ", ".join(str(p.relative_to(loaded.project.project_dir)) for p in newer[:5])
        more = f" and {len(newer) - 5} more" if len(newer) > 5 else ""
        yield Finding("warning", str(manifest_path), f"older than {shown}{more}: run `dbt parse` to pick up changes")
    if loaded.artifact is None:
        yield Finding("warning", str(target / "mxcp_registry.json"),
                      "missing: dbt ran without dbt-mxcp's plugin (install dbt-mxcp in dbt's Python environment "
                      "and run `dbt parse`)")
    elif (loaded.artifact.get("metadata") or {}).get("invocation_id") != loaded.manifest.metadata.get(
            "invocation_id"):
        yield Finding("warning", str(target / "mxcp_registry.json"),
                      "written by another dbt invocation than manifest.json: run `dbt parse`")


def _project_files(loaded: Loaded) -> Iterator[Path]:
    root = loaded.project.project_dir
    skip = {loaded.project.target_path, loaded.project.log_path, root / "dbt_packages", root / "dbt_modules"}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and here / d not in skip]
        for name in filenames:
            if name.endswith((".yml", ".yaml")) and (here != root or name not in NOT_DBT_INPUTS):
                yield here / name
    for e in loaded.registry.all(include_disabled=True):
        if e.source_file:
            path = root / e.source_file
            if path.is_file():
                yield path


def sample_value(t: TypeDef) -> Any:
    """A value of type `t` to prepare SQL with: its default, example or first enum value if declared."""
    if t.has_default and t.default is not None:
        return t.default
    if t.examples:
        return t.examples[0]
    if t.enum:
        return t.enum[0]
    if t.type == "string":
        return _SAMPLES.get(t.format or "", "x")
    if t.type in ("integer", "number"):
        return int(t.minimum) if t.minimum is not None else 1
    if t.type == "boolean":
        return True
    if t.type == "array":
        return [sample_value(t.items)] if t.items is not None else []
    return {}


def _samples(endpoint: Endpoint) -> dict[str, Any]:
    return {p.name: to_bind_value(p, sample_value(p)) for p in endpoint.parameters}


def check_python(loaded: Loaded, endpoint: Endpoint) -> Iterator[Finding]:
    """Load a Python endpoint's function and check it takes the declared parameters."""
    import inspect

    from .python_endpoints import load_function

    try:
        function = load_function(loaded.project.project_dir / (endpoint.source_file or ""), str(endpoint.spec.name))
    except CallError as exc:
        yield Finding("error", _where(endpoint), str(exc))
        return
    signature = inspect.signature(function)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    missing = [p.name for p in endpoint.parameters if p.name not in signature.parameters and not takes_any]
    if missing:
        yield Finding("error", _where(endpoint), f"function {function.__name__}() takes no parameter(s) "
                                                 f"{', '.join(missing)} that the endpoint declares")
    declared = {p.name for p in endpoint.parameters}
    required = [n for n, p in signature.parameters.items() if p.default is p.empty and p.kind in (
        p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in declared]
    if required:
        yield Finding("error", _where(endpoint), f"function {function.__name__}() requires {', '.join(required)}, "
                                                 "which the endpoint does not declare")


def check_write(loaded: Loaded, endpoint: Endpoint) -> Iterator[Finding]:
    """Plan (EXPLAIN, never run) a write endpoint's SQL against the writes database."""
    import duckdb

    cfg = loaded.settings.writes
    if not cfg.enabled:
        yield Finding("warning", _where(endpoint), "not checked: writes are disabled in mxcp.yml")
        return
    import shutil
    import tempfile

    path = loaded.project.project_dir / cfg.path
    with tempfile.TemporaryDirectory(prefix="dbt-mxcp-validate-") as scratch:
        # A scratch copy of the writes database (DuckDB plans no DML on a read-only one), or a fresh
        # one; `init_sql` runs as the server runs it. The real database is never touched.
        copy = Path(scratch) / path.name
        if path.is_file():
            shutil.copyfile(path, copy)
        try:
            conn = duckdb.connect(str(copy))
        except duckdb.Error as exc:
            yield Finding("warning", _where(endpoint), f"not checked: cannot open the writes database ({exc})")
            return
        try:
            if cfg.init_sql:
                conn.execute(cfg.init_sql)
            conn.execute(f"EXPLAIN {endpoint.sql}", _samples(endpoint))
        except duckdb.Error as exc:
            yield Finding("error", _where(endpoint), f"SQL does not prepare against the writes database: "
                                                     f"{str(exc).splitlines()[0]}")
        finally:
            conn.close()


def check_endpoint(warehouse: Warehouse, endpoint: Endpoint) -> Iterator[Finding]:
    """Prepare the endpoint's SQL and compare its result columns with the return type."""
    if endpoint.sql is None:
        return
    params = _samples(endpoint)
    cursor = warehouse.cursor()
    try:
        columns = describe(cursor, as_subquery(endpoint.sql), params, {p.name: p for p in endpoint.parameters})
    except CallError as exc:
        yield Finding("error", _where(endpoint), f"SQL does not prepare against the warehouse: {exc}")
        return
    finally:
        cursor.close()
    yield from _compare(endpoint, columns)


def _where(e: Endpoint) -> str:
    return f"{e.yml_path}: {e.node_id}: {e.label}"


def _compare(endpoint: Endpoint, columns: list[tuple[str, str]]) -> Iterator[Finding]:
    t = endpoint.return_type
    if t is None:
        return
    row = t.items if t.type == "array" else t
    if row is None:
        return
    if row.type != "object":
        if len(columns) != 1:
            yield Finding("error", _where(endpoint), f"returns a {row.type} per row, so the SQL must return one "
                                                     f"column; it returns {len(columns)}: "
                                                     f"{', '.join(c for c, _ in columns)}")
            return
        yield from _compare_type(endpoint, columns[0][0], row, columns[0][1])
        return
    actual = dict(columns)
    for name, prop in (row.properties or {}).items():
        if name not in actual:
            yield Finding("error", _where(endpoint), f"the return type declares '{name}' but the SQL returns no such "
                                                     f"column (it returns {', '.join(actual)})")
            continue
        yield from _compare_type(endpoint, name, prop, actual[name])
    if row.additional_properties is False and row.properties is not None:
        extra = [c for c in actual if c not in row.properties]
        if extra:
            yield Finding("error", _where(endpoint), f"the SQL returns column(s) {', '.join(extra)} that the return "
                                                     "type does not declare (additional_properties: false)")


def _compare_type(endpoint: Endpoint, name: str, declared: TypeDef, duck_type: str) -> Iterator[Finding]:
    actual = type_from_data_type(duck_type)
    if actual is None:
        return
    compatible = declared.type == actual.type or (declared.type == "number" and actual.type == "integer")
    if not compatible:
        yield Finding("error", _where(endpoint), f"column '{name}' is {duck_type} ({actual.type}) in the warehouse "
                                                 f"but the return type says {declared.type}")
    elif declared.format and actual.format and declared.format != actual.format:
        yield Finding("warning", _where(endpoint), f"column '{name}' is {duck_type} (format {actual.format}) but the "
                                                   f"return type says format {declared.format}")


def check_warehouse(loaded: Loaded, *, lock_wait: float = 10.0) -> Iterator[Finding]:
    """Check every enabled endpoint against the warehouse."""
    try:
        warehouse = open_warehouse(loaded.require_warehouse(), lock_wait=lock_wait)
        warehouse.open()
    except MxcpError as exc:
        yield Finding("error", "warehouse", str(exc))
        return
    try:
        for endpoint in loaded.registry.all():
            if endpoint.source_kind == "python":
                yield from check_python(loaded, endpoint)
            elif getattr(endpoint.spec, "access", "read") == "write":
                yield from check_write(loaded, endpoint)
            else:
                yield from check_endpoint(warehouse, endpoint)
    finally:
        warehouse.close()
