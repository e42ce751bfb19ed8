"""Scale benchmarks (issue 8, "Scale"): synthetic projects of 100, 1,000 and 5,000 models with one
endpoint each, and results past `max_rows` on a 10-million-row relation.

Per size N, the project is bench/synth.py's manifest (one tool per model) with a dbt_project.yml, a
profiles.yml and a DuckDB warehouse, ``db.duckdb``, as the profile names it. The relations are created
directly in it (one CREATE TABLE per model and source table, with the manifest's column types; empty but
for one row of m_1): dbt is not run. Measured for each size:

- registry load: ``read_registry`` in a fresh process (bench/_child.py ``cold whole``), and its peak RSS;
- ``dbt-mxcp validate``: the whole process (every endpoint's SQL described against DuckDB) and its peak RSS;
- ``dbt-mxcp drift check --baseline``: the whole process, against a baseline taken from the warehouse
  (``drift snapshot``) and one taken with ``--no-warehouse``, and its peak RSS;
- reload, in a fresh process holding a served state (``LiveProject``, what ``serve`` runs): a forced
  ``reload_if_changed(force=True)`` (what SIGHUP does) and one call on the new generation; then a reload
  after the warehouse file changed (as after ``dbt build``: a new snapshot copy); RSS and peaks.

Rows past max_rows: a second project whose m_0 holds 1,000,000 rows and m_1 10,000,000 (DuckDB ``range()``),
each with an endpoint selecting all of it (model-backed, no parameters) and one sorting all of it
(``order by``, a diagnostic), called through the pipeline in a fresh process per endpoint and cap (1,000,
the default ``limits.max_rows``, and 10,000): time to the truncated answer and the RSS growth during the call.

    python bench/scale.py            # full run; writes bench/results/scale.json
    python bench/scale.py --quick    # one run per figure
    python bench/scale.py --sizes 100,1000 --skip-rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
CHILD = BENCH_DIR / "_child.py"
RESULTS = BENCH_DIR / "results" / "scale.json"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(BENCH_DIR))

import synth  # noqa: E402

SIZES = (100, 1000, 5000)
PROFILE = "bench_proj"  # synth's project name; the manifest's relations live in database "db"
REGISTRY_TARGET_S = 1.0  # the issue: "a 5,000-model manifest must take well under a second"
DRIFT_TARGET_S = 2.0  # the issue: "A 5,000-model manifest is checked in under 2 s"
TARGET_SIZE = 5000
SERVED_TOOL, SERVED_ARGS = "get_m_1", {"c0": 1}  # model-backed point lookup; m_1 holds that one row
ROW_RELATIONS = {"1M": ("m_0", 1_000_000), "10M": ("m_1", 10_000_000)}
CAPS = (1000, 10_000)  # 1,000 is the default limits.max_rows (dbt_mxcp/settings.py)
# The cap does not bound a query that must read everything before its first row: bounded means the
# 10M-row figure stays within this factor (plus a little slack) of the 1M-row one.
BOUND_FACTOR = 1.5


# ---- helpers ---------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    """This environment without the DBT_* settings that would point a command elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}


def _status_kb(key: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: write 5 to clear_refs), so that the next
    peak read is that of what runs in between, not of the process's past."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _flags(project_dir: Path) -> list[str]:
    # --profiles-dir: the project folder, which holds profiles.yml (so ~/.dbt is never read).
    return ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]


def _run_child(*args: str, script: Path = SCRIPT) -> dict[str, Any]:
    """Run a child mode in a fresh interpreter; its last stdout line is a JSON object."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=_env(),
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _wall(cmd: list[str], expect_rc: int = 0) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                          check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != expect_rc:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect_rc}:\n{proc.stderr[-3000:]}")
    return elapsed


# ---- the projects ----------------------------------------------------------------------------------

def _write_config(project_dir: Path) -> None:
    (project_dir / "dbt_project.yml").write_text(
        f'name: {PROFILE}\nversion: "1.0"\nconfig-version: 2\nprofile: {PROFILE}\n')
    (project_dir / "profiles.yml").write_text(
        f"{PROFILE}:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: {json.dumps(str(project_dir / 'db.duckdb'))}\n      schema: main\n      threads: 1\n")


def _create_relations(db_path: Path, manifest: dict[str, Any], data: dict[str, int]) -> None:
    """The manifest's relations in a new DuckDB file (its stem is the manifest's database, "db").

    `data`: model name -> rows to fill it with from range(); the others stay empty (describing SQL,
    as validate does, reads no rows).
    """
    import duckdb

    db_path.unlink(missing_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set enable_progress_bar = false")  # it draws on stdout even when that is a pipe
        con.execute("begin")
        rels = synth.relations(manifest)
        for schema in sorted({s for s, _, _ in rels}):
            con.execute(f'create schema if not exists "{schema}"')
        for schema, name, columns in rels:
            if name in data:
                con.execute(f'create table "{schema}"."{name}" as {_rows_sql(data[name])}')
            else:
                con.execute(f'create table "{schema}"."{name}" ({", ".join(f"{c} {t}" for c, t in columns)})')
        con.execute("commit")
        con.execute("checkpoint")
    finally:
        con.close()


def _rows_sql(n: int) -> str:
    """`n` rows (c0 = 1..n) with synth's eight column types (c0..c7), varied enough not to compress to nothing."""
    assert synth.COLUMN_TYPES == ("integer", "varchar", "date", "double", "boolean", "timestamp", "bigint",
                                  "decimal(12,2)")
    return ("select i::integer as c0, 'row ' || i as c1, date '2020-01-01' + (i % 3650)::integer as c2, "
            "i::double / 7 as c3, i % 2 = 0 as c4, timestamp '2020-01-01' + to_seconds(i) as c5, "
            f"(i * 3)::bigint as c6, ((i % 100000) / 100)::decimal(12,2) as c7 from range(1, {n + 1}) t(i)")


def write_project(project_dir: Path, n: int) -> dict[str, Any]:
    """synth's n-model project with a profile and a DuckDB warehouse holding every relation."""
    project_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = synth.generate(n)
    path = synth.write_manifest(manifest, project_dir)
    t1 = time.perf_counter()
    _write_config(project_dir)
    db = project_dir / "db.duckdb"
    _create_relations(db, manifest, {"m_1": 1})
    t2 = time.perf_counter()
    return {"manifest_mb": path.stat().st_size / 1e6, "warehouse_mb": db.stat().st_size / 1e6,
            "relations": len(synth.relations(manifest)), "manifest_s": t1 - t0, "warehouse_s": t2 - t1}


def write_rows_project(project_dir: Path) -> dict[str, Any]:
    """A 3-model synth project: m_0 with 1M rows, m_1 with 10M, m_2 with 100 (for the warm-up call)."""
    project_dir.mkdir(parents=True, exist_ok=True)
    manifest = synth.generate(3)
    every_row = {"type": "array", "items": {"type": "object"}}  # model-backed: the columns fill it in
    # A code endpoint gets no columns from its node: declare them, so that its result is checked as fully.
    columns = {"c0": {"type": "integer"}, "c1": {"type": "string"}, "c2": {"type": "string", "format": "date"},
               "c3": {"type": "number"}, "c4": {"type": "boolean"}, "c5": {"type": "string", "format": "timestamp"},
               "c6": {"type": "integer"}, "c7": {"type": "number"}}
    sorted_rows = {"type": "array", "items": {"type": "object", "properties": columns}}
    for label, (model, _) in (*ROW_RELATIONS.items(), ("small", ("m_2", 100))):
        meta = manifest["nodes"][f"model.{PROFILE}.{model}"]["meta"]  # shared with config and unrendered_config
        meta["mxcp"]["tools"] = [
            {"name": f"all_rows_{label.lower()}", "description": f"Every row of {model} (model-backed, no "
             "parameters).", "return": every_row},
            {"name": f"sorted_rows_{label.lower()}", "description": f"Every row of {model}, largest c3 first.",
             "source": {"code": f"select * from {{{{ ref('{model}') }}}} order by c3 desc"}, "return": sorted_rows},
        ]
    path = synth.write_manifest(manifest, project_dir)
    _write_config(project_dir)
    db = project_dir / "db.duckdb"
    t0 = time.perf_counter()
    _create_relations(db, manifest, {**dict(ROW_RELATIONS.values()), "m_2": 100})
    return {"manifest_mb": path.stat().st_size / 1e6, "warehouse_mb": db.stat().st_size / 1e6,
            "warehouse_s": time.perf_counter() - t0}


# ---- per size ----------------------------------------------------------------------------------------

def _command(project_dir: Path, args: list[str], runs: int, expect_rc: int = 0) -> dict[str, Any]:
    """`dbt-mxcp ARGS` as a whole process: median wall of `runs`; peak RSS from one more run in a wrapper."""
    cmd = [str(BIN / "dbt-mxcp"), *args, *_flags(project_dir)]
    _wall(cmd, expect_rc)  # warm the page cache
    samples = [_wall(cmd, expect_rc) for _ in range(runs)]
    peak = _run_child("_cli", *args, *_flags(project_dir))
    if peak["rc"] != expect_rc:
        raise RuntimeError(f"dbt-mxcp {' '.join(args)} in the wrapper exited {peak['rc']}: {peak['last_line']}")
    return {"wall_s": _median(samples), "samples_s": samples, "peak_rss_mb": peak["peak_rss_kb"] / 1024,
            "last_line": peak["last_line"]}


def bench_size(n: int, project_dir: Path, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Every figure for the n-model project (written to project_dir)."""
    # Other work on the machine inflates every figure: keep what the load was alongside them.
    load_at_start = os.getloadavg()
    setup = write_project(project_dir, n)
    say(f"  {n} models: manifest {setup['manifest_mb']:.1f} MB in {setup['manifest_s']:.1f} s, warehouse "
        f"{setup['warehouse_mb']:.1f} MB ({setup['relations']} relations) in {setup['warehouse_s']:.1f} s")
    out: dict[str, Any] = {"models": n, **setup, "loadavg_at_start": load_at_start}

    cold = [_run_child("cold", "whole", str(project_dir), script=CHILD) for _ in range(repeats)]
    out["registry"] = {"read_registry_s": _median([c["total_s"] for c in cold]),
                       "process_wall_s": _median([c["process_wall_s"] for c in cold]),
                       "peak_rss_mb": _median([c["peak_rss_kb"] for c in cold]) / 1024,
                       "endpoints": cold[-1]["endpoints"], "problems": cold[-1]["problems"]}
    say(f"  {n} models: registry {out['registry']['read_registry_s']:.3f} s; validate x {repeats + 1}")

    out["validate"] = _command(project_dir, ["validate"], repeats)
    out["validate"]["ok"] = f"Validated {n} endpoint(s): all OK" in out["validate"]["last_line"]

    baselines = {"warehouse": project_dir / "baseline_warehouse.json",
                 "manifest": project_dir / "baseline_manifest.json"}
    t0 = time.perf_counter()
    _wall([str(BIN / "dbt-mxcp"), "drift", "snapshot", "--output", str(baselines["warehouse"]),
           *_flags(project_dir)])
    snapshot_s = time.perf_counter() - t0
    _wall([str(BIN / "dbt-mxcp"), "drift", "snapshot", "--no-warehouse", "--output", str(baselines["manifest"]),
           *_flags(project_dir)])
    say(f"  {n} models: validate {out['validate']['wall_s']:.2f} s; drift check x {2 * (repeats + 1)}")
    out["drift"] = {"snapshot_warehouse_s": snapshot_s, "baseline_mb": baselines["warehouse"].stat().st_size / 1e6}
    for which, path in baselines.items():
        result = _command(project_dir, ["drift", "check", "--baseline", str(path)], repeats)
        result["ok"] = "0 breaking, 0 non-breaking" in result["last_line"]
        out["drift"][which] = result

    reloads = repeats + 2
    say(f"  {n} models: drift check {out['drift']['warehouse']['wall_s']:.2f} s; {reloads} forced reloads and "
        f"{reloads} after a warehouse change, in one served process")
    out["reload"] = _run_child("_reload", str(project_dir), str(reloads))
    out["loadavg_at_end"] = os.getloadavg()
    return out


# ---- rows past max_rows ------------------------------------------------------------------------------

def bench_rows(project_dir: Path, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    setup = write_rows_project(project_dir)
    say(f"rows: warehouse {setup['warehouse_mb']:.0f} MB (1M + 10M rows) written in {setup['warehouse_s']:.1f} s")
    calls = repeats + 1
    plan = [("stream", rel, cap, False) for rel in ROW_RELATIONS for cap in CAPS]
    plan += [(variant, rel, CAPS[0], wrap) for rel in ROW_RELATIONS
             for variant, wrap in (("sorted", False), ("sorted, LIMIT pushed down", True))]
    runs = []
    for variant, rel, cap, wrap in plan:
        endpoint = f"{'all' if variant == 'stream' else 'sorted'}_rows_{rel.lower()}"
        result = _run_child("_rows", str(project_dir), endpoint, str(cap), str(calls), "1" if wrap else "0")
        first, rest = result["calls"][0], result["calls"][1:] or result["calls"]
        run = {"variant": variant, "relation": rel, "rows_in_relation": ROW_RELATIONS[rel][1], "cap": cap,
               "endpoint": endpoint, "calls": result["calls"], "first_s": first["s"],
               "warm_s": _median([c["s"] for c in rest]),
               "growth_mb": max(c["growth_kb"] for c in result["calls"]) / 1024,
               "first_growth_mb": first["growth_kb"] / 1024, "rss_before_mb": result["rss_before_kb"] / 1024,
               "returned": first["rows"], "truncated_by": first["truncated_by"], "peak_reset": result["peak_reset"],
               "load_s": result["load_s"]}
        runs.append(run)
        say(f"  {variant}, {rel} rows, max_rows {cap:,}: first {run['first_s'] * 1000:.0f} ms, warm "
            f"{run['warm_s'] * 1000:.0f} ms, RSS growth {run['growth_mb']:.1f} MB, {run['returned']} rows "
            f"({run['truncated_by']})")
    return {**setup, "calls_per_process": calls, "runs": runs, "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg()}


# ---- everything ----------------------------------------------------------------------------------------

def bench_scale(sizes: tuple[int, ...], repeats: int, workdir: Path, progress: Any = None, *,
                rows: bool = True) -> dict[str, Any]:
    """All scale figures; projects go under workdir (the caller removes it)."""
    say = progress or (lambda msg: None)
    out: dict[str, Any] = {"repeats": repeats, "sizes": {}}
    for n in sizes:
        out["sizes"][str(n)] = bench_size(n, workdir / f"scale_{n}", repeats, say)
        shutil.rmtree(workdir / f"scale_{n}", ignore_errors=True)  # the 5,000-model one is large
    if rows:
        out["rows"] = bench_rows(workdir / "scale_rows", repeats, say)
        shutil.rmtree(workdir / "scale_rows", ignore_errors=True)
    return out


def _mb(value: float) -> str:
    return f"{value:.1f} MB" if abs(value) < 10 else f"{value:.0f} MB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms" if seconds < 1 \
        else f"{seconds:.2f} s"


def scale_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows in bench/run.py's shape (metric, value, unit, target, met)."""
    out: list[dict[str, Any]] = []
    for n, r in results.get("sizes", {}).items():
        big = int(n) == TARGET_SIZE
        prefix = f"scale, {int(n):,} models"
        reg, val, drift, rel = r["registry"], r["validate"], r["drift"], r["reload"]
        forced, changed = rel["forced"], rel["changed"]
        reg_target = f"< {REGISTRY_TARGET_S:g} s (issue)" if big else ""
        drift_target = f"< {DRIFT_TARGET_S:g} s (issue)" if big else ""
        out += [
            {"metric": f"{prefix}: registry load (read_registry), cold process", "value": reg["read_registry_s"],
             "unit": "s", "target": reg_target, "met": reg["read_registry_s"] < REGISTRY_TARGET_S if big else None},
            {"metric": f"{prefix}: registry load, peak RSS (VmHWM)", "value": reg["peak_rss_mb"], "unit": "MB",
             "target": "", "met": None},
            {"metric": f"{prefix}: dbt-mxcp validate (process)", "value": val["wall_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": f"{prefix}: dbt-mxcp validate, peak RSS", "value": val["peak_rss_mb"], "unit": "MB",
             "target": "", "met": None},
            {"metric": f"{prefix}: validate passes ({n} endpoints described against DuckDB)", "value":
             "all OK" if val["ok"] else val["last_line"], "unit": "", "target": "all OK", "met": val["ok"]},
            {"metric": f"{prefix}: drift check --baseline, warehouse baseline (process)", "value":
             drift["warehouse"]["wall_s"], "unit": "s", "target": drift_target,
             "met": drift["warehouse"]["wall_s"] < DRIFT_TARGET_S if big else None},
            {"metric": f"{prefix}: drift check --baseline, --no-warehouse baseline (process)", "value":
             drift["manifest"]["wall_s"], "unit": "s", "target": drift_target,
             "met": drift["manifest"]["wall_s"] < DRIFT_TARGET_S if big else None},
            {"metric": f"{prefix}: drift check, peak RSS (warehouse / manifest baseline)", "value":
             f"{_mb(drift['warehouse']['peak_rss_mb'])} / {_mb(drift['manifest']['peak_rss_mb'])}", "unit": "",
             "target": "", "met": None},
            {"metric": f"{prefix}: drift check finds no change (both baselines)", "value":
             "0 + 0" if drift["warehouse"]["ok"] and drift["manifest"]["ok"] else "changes", "unit": "",
             "target": "0 + 0", "met": drift["warehouse"]["ok"] and drift["manifest"]["ok"]},
            {"metric": f"{prefix}: served state, LiveProject.start()", "value": rel["start_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": f"{prefix}: forced reload (SIGHUP): reload_if_changed(force=True)", "value":
             forced["reload_s"], "unit": "s", "target": "", "met": None},
            {"metric": f"{prefix}: forced reload to the first answer of the new generation", "value":
             forced["to_first_call_s"], "unit": "s", "target": "", "met": forced["generations_ok"]},
            {"metric": f"{prefix}: reload after the warehouse changed (new snapshot copy)", "value":
             changed["reload_s"], "unit": "s", "target": "", "met": None},
            {"metric": f"{prefix}: served RSS after start / after {rel['reloads'] * 2} reloads and a full "
             "collection", "value":
             f"{_mb(rel['rss_after_start_kb'] / 1024)} / {_mb(rel['rss_end_kb'] / 1024)}", "unit": "",
             "target": "", "met": None},
            {"metric": f"{prefix}: served RSS peak growth during a reload (forced / warehouse changed)", "value":
             f"{_mb(forced['growth_kb'] / 1024)} / {_mb(changed['growth_kb'] / 1024)}", "unit": "", "target": "",
             "met": None},
            {"metric": f"{prefix}: served process peak RSS (VmHWM over start and reloads)", "value":
             rel["process_peak_kb"] / 1024, "unit": "MB", "target": "", "met": None},
            {"metric": f"{prefix}: served process, one full gc.collect() ({rel['gc_tracked_objects']:,} objects "
             "tracked; diagnostic)", "value": rel["gc_collect_s"], "unit": "s", "target": "", "met": None},
        ]
    rows = results.get("rows")
    if rows:
        by = {(r["variant"], r["relation"], r["cap"]): r for r in rows["runs"]}
        for r in rows["runs"]:
            label = f"rows, {r['variant']}, {r['relation']}-row relation, max_rows {r['cap']:,}"
            out += [
                {"metric": f"{label}: time to the answer (first / warm median)", "value":
                 f"{_ms(r['first_s'])} / {_ms(r['warm_s'])}", "unit": "", "target": "", "met": None},
                {"metric": f"{label}: peak RSS growth during a call", "value": r["growth_mb"], "unit": "MB",
                 "target": "", "met": None},
                {"metric": f"{label}: rows returned", "value": f"{r['returned']:,} ({r['truncated_by']})",
                 "unit": "", "target": f"{r['cap']:,} (max_rows)",
                 "met": r["returned"] == r["cap"] and r["truncated_by"] == "max_rows"},
            ]
        for variant in ("stream", "sorted", "sorted, LIMIT pushed down"):
            for cap in CAPS:
                small, large = by.get((variant, "1M", cap)), by.get((variant, "10M", cap))
                if small is None or large is None:
                    continue
                # Slack: 10 ms and 16 MB, so that noise on a small figure does not read as growth.
                time_ok = large["warm_s"] <= BOUND_FACTOR * small["warm_s"] + 0.01
                mem_ok = large["growth_mb"] <= BOUND_FACTOR * small["growth_mb"] + 16
                out.append({"metric": f"rows, {variant}, max_rows {cap:,}: 10M vs 1M relation, warm time / RSS "
                            "growth", "value": f"{_ms(large['warm_s'])} vs {_ms(small['warm_s'])} / "
                            f"{_mb(large['growth_mb'])} vs {_mb(small['growth_mb'])}", "unit": "",
                            "target": "bounded (ours)" if variant == "stream" else "",
                            "met": (time_ok and mem_ok) if variant == "stream" else None})
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="dbt-mxcp scale benchmarks (see docs/benchmarks.md, Scale)")
    parser.add_argument("--quick", action="store_true", help="one run per figure (sizes unchanged)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="model counts, comma-separated")
    parser.add_argument("--skip-rows", action="store_true", help="leave out the 10-million-row case")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    repeats = 1 if args.quick else 3

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="dbt-mxcp-scale-"))
    try:
        results = bench_scale(sizes, repeats, workdir, progress, rows=not args.skip_rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    from run import environment, finish, print_table

    results["environment"] = {**environment(), "loadavg": os.getloadavg()}
    results["command"] = "python bench/scale.py " + " ".join(argv)
    results["elapsed_s"] = time.perf_counter() - started
    table = scale_rows(results)
    print_table(table)
    print()
    finish(results, table, args.out)
    return 0


# ---- child modes (each in a fresh interpreter; the last stdout line is JSON) ---------------------------

def child_cli(argv: list[str]) -> None:
    """`dbt-mxcp ARGV` in this process, then its peak RSS (VmHWM): the entry point's own peak, which
    getrusage from the parent would not give (Linux carries a parent's peak across fork and exec)."""
    import contextlib
    import io

    from dbt_mxcp.cli import main as cli_main

    buf = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(buf):
        try:
            cli_main(args=argv, prog_name="dbt-mxcp")
        except SystemExit as exc:
            code = exc.code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    lines = buf.getvalue().strip().splitlines()
    print(json.dumps({"rc": code, "peak_rss_kb": _status_kb("VmHWM"), "last_line": lines[-1] if lines else ""}))


def child_reload(project_dir: str, reloads: int) -> None:
    """A served state as `serve` holds it: start, then forced reloads, then reloads after the warehouse changed."""
    t0 = time.perf_counter()
    from dbt_mxcp.project import Flags
    from dbt_mxcp.server.live import LiveProject

    live = LiveProject(Flags(project_dir=project_dir, profiles_dir=project_dir))
    t1 = time.perf_counter()
    live.start()
    t2 = time.perf_counter()

    def call() -> int:
        with live.use() as served:
            endpoint = served.registry.get("tool", SERVED_TOOL)
            assert endpoint is not None
            outcome = served.pipeline.call(endpoint, SERVED_ARGS, None)
            assert outcome.value["c0"] == 1, outcome.value
            return served.generation

    call()  # the first call imports what calls need (jsonschema, ...): not a reload's cost
    out: dict[str, Any] = {"import_s": t1 - t0, "start_s": t2 - t1, "rss_after_start_kb": _status_kb("VmRSS"),
                           "peak_after_start_kb": _status_kb("VmHWM"), "reloads": reloads}
    process_peak = out["peak_after_start_kb"]

    def reload(force: bool) -> dict[str, Any]:
        nonlocal process_peak
        generation = live.current.generation
        rss = _status_kb("VmRSS")
        process_peak = max(process_peak, _status_kb("VmHWM"))
        reset = _reset_peak()
        t0 = time.perf_counter()
        swapped = live.reload_if_changed(force=force)
        t1 = time.perf_counter()
        served = call()
        t2 = time.perf_counter()
        peak = _status_kb("VmHWM")
        process_peak = max(process_peak, peak)
        return {"reload_s": t1 - t0, "to_first_call_s": t2 - t0, "swapped": swapped,
                "generation_ok": swapped and served == generation + 1, "rss_before_kb": rss, "peak_kb": peak,
                "growth_kb": peak - rss, "rss_after_kb": _status_kb("VmRSS"), "peak_reset": reset}

    forced = [reload(True) for _ in range(reloads)]
    changed = []
    import duckdb

    db = Path(project_dir) / "db.duckdb"
    for k in range(reloads):
        # What `dbt build` does to the file the server watches (outside the timing): a new version of it.
        con = duckdb.connect(str(db))
        con.execute(f"insert into main.m_2 (c0) values ({k})")
        con.execute("checkpoint")
        con.close()
        time.sleep(0.01)  # a distinct mtime even on coarse clocks
        changed.append(reload(False))
    # The served state is not frozen (load(freeze=False)), so a full collection walks all of it: the
    # pause a call can meet when the collector's oldest generation comes due.
    import gc

    t0 = time.perf_counter()
    gc.collect()
    out["gc_collect_s"] = time.perf_counter() - t0
    out["gc_tracked_objects"] = len(gc.get_objects())
    live.close()

    def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"reload_s": _median([s["reload_s"] for s in samples]),
                "to_first_call_s": _median([s["to_first_call_s"] for s in samples]),
                "growth_kb": max(s["growth_kb"] for s in samples),
                "generations_ok": all(s["generation_ok"] for s in samples), "samples": samples}

    out.update(forced=summary(forced), changed=summary(changed), rss_end_kb=_status_kb("VmRSS"),
               process_peak_kb=max(process_peak, _status_kb("VmHWM")))
    print(json.dumps(out))


def child_rows(project_dir: str, endpoint_name: str, cap: int, calls: int, wrap: bool) -> None:
    """Calls of one endpoint through the pipeline with limits.max_rows = cap: time and RSS growth of each."""
    import dataclasses

    t0 = time.perf_counter()
    from dbt_mxcp.load import load
    from dbt_mxcp.pipeline import Pipeline
    from dbt_mxcp.project import Flags
    from dbt_mxcp.warehouse import open_warehouse

    loaded = load(Flags(project_dir=project_dir, profiles_dir=project_dir))  # as `dbt-mxcp run` loads
    warehouse = open_warehouse(loaded.require_warehouse())
    warehouse.open()
    limits = dataclasses.replace(loaded.settings.engine_limits(), max_rows=cap)  # the defaults otherwise
    pipeline = Pipeline(loaded.registry, warehouse, limits, loaded.settings)
    endpoint = loaded.registry.get("tool", endpoint_name)
    assert endpoint is not None and endpoint.sql is not None, endpoint_name
    if wrap:
        # Diagnostic: the cap pushed into the SQL, so that DuckDB can stop (top-N) instead of sorting all.
        endpoint = dataclasses.replace(endpoint, sql=f"select * from ({endpoint.sql}) as capped limit {cap + 1}")
    warm = loaded.registry.get("tool", "all_rows_small")
    assert warm is not None
    pipeline.call(warm, {}, None)  # imports and first-query set-up: not the big call's cost
    load_s = time.perf_counter() - t0
    results = []
    rss_before = _status_kb("VmRSS")
    reset = True
    for _ in range(calls):
        rss = _status_kb("VmRSS")
        reset = _reset_peak() and reset
        t = time.perf_counter()
        outcome = pipeline.call(endpoint, {}, None)
        elapsed = time.perf_counter() - t
        peak = _status_kb("VmHWM")
        results.append({"s": elapsed, "growth_kb": peak - rss, "rss_before_kb": rss, "rows": len(outcome.value),
                        "truncated_by": "max_rows" if outcome.truncated and "row cap" in (outcome.note or "")
                        else ("max_bytes" if outcome.truncated else None), "note": outcome.note})
        del outcome
    warehouse.close()
    print(json.dumps({"load_s": load_s, "rss_before_kb": rss_before, "peak_reset": reset, "calls": results}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cli":
        child_cli(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "_reload":
        child_reload(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 7 and sys.argv[1] == "_rows":
        child_rows(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1")
    else:
        sys.exit(main(sys.argv[1:]))
