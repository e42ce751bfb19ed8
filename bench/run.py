"""dbt-mxcp benchmarks: import cost, registry build from large manifests, serving and drift check.

    python bench/run.py            # full run (about 90 s on 2 cores)
    python bench/run.py --quick    # fewer repeats, same sizes
    python bench/run.py --profile  # also print a cProfile of build_registry on the largest manifest
                                   # (and of `dbt-mxcp drift check` when the drift section runs)
    python bench/run.py --only drift  # one section (import, example, serving, registry, drift, scale)
    python bench/run.py --only mxcp   # side by side with MXCP 0.12.3 (bench/mxcp_compare.py; installs
                                      # MXCP into bench/results/mxcp-venv; not in the default run)

Prints a table and writes bench/results/latest.json. Uses only this interpreter (sys.executable),
the standard library and dbt_mxcp; it is not part of the test suite, and a missed target only
shows as "NO" in the table (the exit status is 0 unless the benchmark itself fails).
See docs/benchmarks.md for the method and the last recorded figures.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHILD = BENCH_DIR / "_child.py"
RESULTS = BENCH_DIR / "results" / "latest.json"
sys.path.insert(0, str(BENCH_DIR))

import drift  # noqa: E402
import synth  # noqa: E402

SIZES = (100, 1000, 5000)
IMPORT_TARGET_S = 0.1  # ours: dbt imports dbt_mxcp on every command
REGISTRY_TARGET_S = 1.0  # the issue: "a 5,000-model manifest must take well under a second"
REGISTRY_TARGET_SIZE = 5000
FORBIDDEN = ("dbt", "mcp", "cel", "duckdb", "jinja2", "pydantic")  # import dbt_mxcp must load none of them


# ---- helpers -----------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def run_child(*args: str, cwd: Path | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, cwd=cwd,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"_child.py {' '.join(args)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return proc.stdout.strip()

    status = git("status", "--porcelain")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": {d: version(d) for d in ("dbt-mxcp", "dbt-core", "dbt-duckdb", "duckdb", "pydantic", "Jinja2",
                                             "common-expression-language", "mcp")},
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


# ---- 1. import cost ----------------------------------------------------------------------------

def bench_import(runs: int, plugin_runs: int, workdir: Path) -> dict[str, Any]:
    py = sys.executable
    # Alternate the two commands so drift (CPU frequency, page cache) hits both alike.
    bare, imported = [], []
    for _ in range(2):  # warm the page cache
        wall([py, "-c", "pass"], workdir)
        wall([py, "-c", "import dbt_mxcp"], workdir)
    for _ in range(runs):
        bare.append(wall([py, "-c", "pass"], workdir))
        imported.append(wall([py, "-c", "import dbt_mxcp"], workdir))

    self_reported = []
    for _ in range(runs):
        proc = subprocess.run([py, "-X", "importtime", "-c", "import dbt_mxcp"], cwd=workdir, capture_output=True,
                              text=True, check=True)
        cumulative = None
        for line in proc.stderr.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2] == "dbt_mxcp":
                cumulative = int(parts[1]) / 1e6
        if cumulative is None:
            raise RuntimeError(f"no dbt_mxcp line in -X importtime output:\n{proc.stderr[-2000:]}")
        self_reported.append(cumulative)

    # In a `python -c` process like the ones timed above (a script run would preload other modules).
    probe = ("import sys; b = set(sys.modules); import dbt_mxcp; a = set(sys.modules); "
             "print(sorted(a - b)); print(sorted({m.split('.')[0] for m in a}))")
    proc = subprocess.run([py, "-c", probe], cwd=workdir, capture_output=True, text=True, check=True)
    added_line, loaded_line = proc.stdout.splitlines()
    loaded = set(ast.literal_eval(loaded_line))
    mods = {"added_modules": ast.literal_eval(added_line),
            "forbidden_loaded": [m for m in FORBIDDEN if m in loaded]}

    plugin_samples = [run_child("plugins", cwd=workdir) for _ in range(plugin_runs)]
    last = plugin_samples[-1]
    return {
        "runs": runs,
        "python_c_pass_s": median(bare),
        "python_c_import_s": median(imported),
        "import_net_wall_s": median(imported) - median(bare),
        "import_importtime_s": median(self_reported),
        "import_importtime_samples_s": self_reported,
        "added_modules": mods["added_modules"],
        "forbidden_loaded": mods["forbidden_loaded"],
        "plugins": {
            "runs": plugin_runs,
            "dbt_import_s": median([s["dbt_import_s"] for s in plugin_samples]),
            "import_after_dbt_s": median([s["import_s"] for s in plugin_samples]),
            "getattr_plugins_s": median([s["plugins_s"] for s in plugin_samples]),
            "getattr_plugins_again_s": median([s["plugins_again_s"] for s in plugin_samples]),
            "plugins": last["plugins"],
            "added_top_level": last["added_top_level"],
            "added_module_count": last["added_module_count"],
        },
    }


# ---- 2. registry build -------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def check_registry(registry: Any, problems: list[Any], n: int) -> dict[str, Any]:
    endpoints = registry.endpoints
    code = sum(1 for e in endpoints if e.source_kind == "code")
    with_policy = sum(1 for e in endpoints if e.input_rules)
    expected = {"endpoints": n, "code": len(range(0, n, 10)), "with_policy": len(range(0, n, 20))}
    got = {"endpoints": len(endpoints), "code": code, "with_policy": with_policy}
    return {"expected": expected, "got": got, "problems": [str(p) for p in problems[:10]],
            "problem_count": len(problems), "ok": expected == got and not problems}


def bench_registry_size(n: int, project_dir: Path, repeats: int, cold_runs: int) -> dict[str, Any]:
    from dbt_mxcp.load import read_registry
    from dbt_mxcp.manifest import Manifest
    from dbt_mxcp.registry import build_registry

    target = project_dir / "target"
    path = target / "manifest.json"

    def read() -> Any:
        with path.open("rb") as fh:
            return json.load(fh)

    # Warm-up: the first build imports jinja2 and cel and fills pydantic's and re's caches.
    _, registry, problems = read_registry(target, project_dir, freeze=True)
    check = check_registry(registry, problems, n)
    del registry, problems

    samples: dict[str, list[float]] = {k: [] for k in ("json_load_s", "manifest_s", "build_s", "whole_s",
                                                        "json_load_nogc_s", "build_nogc_s", "whole_nogc_s")}
    def split() -> tuple[float, float, float]:
        """Seconds for json.load, Manifest(data) and build_registry, one after the other."""
        t0 = time.perf_counter()
        data = read()
        t1 = time.perf_counter()
        manifest = Manifest(data)
        t2 = time.perf_counter()
        build_registry(manifest, project_dir)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    for _ in range(repeats):
        gc.collect()
        load_s, manifest_s, build_s = split()
        samples["json_load_s"].append(load_s)
        samples["manifest_s"].append(manifest_s)
        samples["build_s"].append(build_s)
        gc.collect()
        t0 = time.perf_counter()
        read_registry(target, project_dir, freeze=True)
        samples["whole_s"].append(time.perf_counter() - t0)
        # Diagnostic: the same steps with the cyclic garbage collector off (what GC costs them).
        gc.collect()
        gc.disable()
        try:
            load_s, manifest_s, build_s = split()
        finally:
            gc.enable()
        samples["json_load_nogc_s"].append(load_s)
        samples["build_nogc_s"].append(build_s)
        samples["whole_nogc_s"].append(load_s + manifest_s + build_s)
    gc.collect()

    cold: dict[str, list[dict[str, Any]]] = {"split": [], "whole": []}
    for _ in range(cold_runs):
        for how in ("split", "whole"):
            t0 = time.perf_counter()
            result = run_child("cold", how, str(project_dir))
            result["process_wall_s"] = time.perf_counter() - t0
            cold[how].append(result)

    def cold_median(how: str, key: str) -> float:
        return median([float(r[key]) for r in cold[how]])

    return {
        "models": n,
        "nodes": None,
        "manifest_mb": path.stat().st_size / 1e6,
        "repeats": repeats,
        "warm": {k: median(v) for k, v in samples.items()},
        "warm_samples": samples,
        "cold_runs": cold_runs,
        "cold": {
            "import_s": cold_median("whole", "import_s"),
            "json_load_s": cold_median("split", "json_load_s"),
            "manifest_s": cold_median("split", "manifest_s"),
            "build_s": cold_median("split", "build_s"),
            "whole_s": cold_median("whole", "total_s"),
            "process_wall_s": cold_median("whole", "process_wall_s"),
            "rss_after_import_mb": cold_median("whole", "rss_after_import_kb") / 1024,
            "ru_maxrss_mb": cold_median("whole", "ru_maxrss_kb") / 1024,
            "peak_rss_mb": cold_median("whole", "peak_rss_kb") / 1024,
        },
        "cold_samples": cold,
        "check": check,
    }


def bench_registry(sizes: tuple[int, ...], repeats: int, cold_runs: int, workdir: Path) -> dict[str, Any]:
    out = {}
    for n in sizes:
        project_dir = workdir / f"synth_{n}"
        t, path = timed(lambda: synth.write(n, project_dir))  # noqa: B023
        with path.open("rb") as fh:
            raw = json.load(fh)
        counts = {k: len(raw[k]) for k in ("nodes", "sources", "exposures", "macros")}
        del raw
        progress(f"  {n} models: manifest {path.stat().st_size / 1e6:.1f} MB written in {t:.1f} s; measuring")
        result = bench_registry_size(n, project_dir, repeats, cold_runs)
        result["nodes"] = counts
        out[str(n)] = result
    return out


def profile_build(project_dir: Path, top: int = 25) -> str:
    import cProfile
    import io
    import pstats

    from dbt_mxcp.manifest import load_manifest
    from dbt_mxcp.registry import build_registry

    manifest = load_manifest(project_dir / "target")
    build_registry(manifest, project_dir)
    prof = cProfile.Profile()
    prof.enable()
    build_registry(manifest, project_dir)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# ---- report ------------------------------------------------------------------------------------

def bench_example(runs: int, workdir: Path) -> dict[str, Any]:
    """The shop example: `dbt parse` with and without the plugin, and `dbt-mxcp` commands end to end."""
    bindir = Path(sys.executable).parent
    project = workdir / "shop"
    shutil.copytree(REPO / "examples" / "shop", project,
                    ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "seeds/*.csv"))
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    subprocess.run([sys.executable, "scripts/generate_seeds.py"], cwd=project, check=True, capture_output=True)
    subprocess.run([str(bindir / "dbt"), "build", "--profiles-dir", "."], cwd=project, check=True,
                   capture_output=True, env=env)

    def timed_cmd(cmd: list[str], extra: dict[str, str] | None = None) -> float:
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=project, check=True, capture_output=True, env={**env, **(extra or {})})
            samples.append(time.perf_counter() - t0)
        return median(samples)

    parse = [str(bindir / "dbt"), "parse", "--profiles-dir", "."]
    mxcp = [str(bindir / "dbt-mxcp")]
    return {
        "dbt_parse_plugin_off_s": timed_cmd(parse, {"DBT_MXCP_PLUGIN": "off"}),
        "dbt_parse_plugin_on_s": timed_cmd(parse),
        "list_s": timed_cmd([*mxcp, "list", "--profiles-dir", "."]),
        "validate_s": timed_cmd([*mxcp, "validate", "--profiles-dir", "."]),
        "run_tool_s": timed_cmd([*mxcp, "run", "tool", "get_customer", "--profiles-dir", ".", "--param",
                                 "customer_id=1"]),
    }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if "import" in results:
        out += _import_rows(results["import"])
    for run in (results.get("serving") or {}).get("stdio", []):
        era = "2025-11-25" if run["mode"] == "legacy" else "2026-07-28"
        out += [
            {"metric": f"serve stdio {era}: tools/call p50", "value": run["p50_s"], "unit": "s",
             "target": "<= 2 ms (issue)", "met": run["p50_s"] <= 0.002},
            {"metric": f"serve stdio {era}: tools/call p95 / p99", "value":
             f"{run['p95_s'] * 1000:.2f} / {run['p99_s'] * 1000:.2f} ms", "unit": "", "target": "", "met": None},
            {"metric": f"serve stdio {era}: process start to first tool result", "value": run["start_to_first_s"],
             "unit": "s", "target": "<= 0.8 s (issue)", "met": run["start_to_first_s"] <= 0.8},
        ]
    for run in (results.get("serving") or {}).get("http", []):
        kind = "json responses" if run["json_response"] else "event-stream responses"
        out += [
            {"metric": f"serve http, 16 clients, {kind}: calls/s", "value": f"{run['calls_per_s']:.0f}",
             "unit": "", "target": ">= 800 (issue)", "met": run["calls_per_s"] >= 800},
            {"metric": f"serve http, 16 clients, {kind}: errors", "value": str(run["errors"]), "unit": "",
             "target": "0", "met": run["errors"] == 0},
            {"metric": f"serve http, {kind}: server peak RSS", "value": run["server_peak_rss_mb"], "unit": "MB",
             "target": "<= 100 MB (issue)", "met": run["server_peak_rss_mb"] <= 100},
        ]
    overhead = results.get("overhead")
    if overhead:
        for label in ("neither", "policies", "policies + audit"):
            out.append({"metric": f"pipeline call p50, {label}", "value": overhead[label], "unit": "s",
                        "target": "", "met": None})
        added = overhead["added_by_policies_and_audit"]
        out.append({"metric": "added by policies + strict audit (fsync interval), p50", "value": added,
                    "unit": "s", "target": "<= 0.3 ms (issue 4)", "met": added <= 0.0003})
    out += _registry_rows(results)
    if "drift" in results:
        out += drift.rows(results["drift"])
    if "scale" in results:
        import scale

        out += scale.scale_rows(results["scale"])
    if "mxcp" in results:
        import mxcp_compare

        out += mxcp_compare.rows(results["mxcp"])
    return out


def _import_rows(imp: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"metric": "import dbt_mxcp (python -c, net of bare startup)", "value": imp["import_net_wall_s"],
         "unit": "s", "target": f"<= {IMPORT_TARGET_S:g} s (ours)", "met": imp["import_net_wall_s"] <= IMPORT_TARGET_S},
        {"metric": "import dbt_mxcp (-X importtime, cumulative)", "value": imp["import_importtime_s"],
         "unit": "s", "target": f"<= {IMPORT_TARGET_S:g} s (ours)",
         "met": imp["import_importtime_s"] <= IMPORT_TARGET_S},
        {"metric": "import pulls in dbt/mcp/cel/duckdb/jinja2/pydantic", "value":
         ", ".join(imp["forbidden_loaded"]) or "none", "unit": "", "target": "none",
         "met": not imp["forbidden_loaded"]},
        {"metric": "import dbt_mxcp after dbt is loaded", "value": imp["plugins"]["import_after_dbt_s"],
         "unit": "s", "target": "", "met": None},
        {"metric": "getattr(dbt_mxcp, 'plugins') after dbt is loaded", "value":
         imp["plugins"]["getattr_plugins_s"], "unit": "s", "target": "", "met": None},
    ]


def _registry_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ex = results.get("example")
    if ex:
        overhead = ex["dbt_parse_plugin_on_s"] - ex["dbt_parse_plugin_off_s"]
        out += [
            {"metric": "shop example: dbt parse, plugin off", "value": ex["dbt_parse_plugin_off_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": "shop example: dbt parse, plugin on", "value": ex["dbt_parse_plugin_on_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": "shop example: plugin overhead on dbt parse", "value": overhead, "unit": "s",
             "target": "", "met": None},
            {"metric": "shop example: dbt-mxcp list (process)", "value": ex["list_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": "shop example: dbt-mxcp validate (process)", "value": ex["validate_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": "shop example: dbt-mxcp run tool get_customer (process)", "value": ex["run_tool_s"],
             "unit": "s", "target": "", "met": None},
        ]
    for n, r in (results.get("registry") or {}).items():
        big = int(n) == REGISTRY_TARGET_SIZE
        target = f"< {REGISTRY_TARGET_S:g} s (issue)" if big else ""
        w, c = r["warm"], r["cold"]
        prefix = f"{n} models ({r['manifest_mb']:.1f} MB)"
        out += [
            {"metric": f"{prefix}: json.load, warm", "value": w["json_load_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": f"{prefix}: Manifest(data), warm", "value": w["manifest_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": f"{prefix}: build_registry, warm", "value": w["build_s"], "unit": "s", "target": target,
             "met": w["build_s"] < REGISTRY_TARGET_S if big else None},
            {"metric": f"{prefix}: read_registry (load + build), warm", "value": w["whole_s"], "unit": "s",
             "target": target, "met": w["whole_s"] < REGISTRY_TARGET_S if big else None},
            {"metric": f"{prefix}: json.load, warm, GC off (diagnostic)", "value": w["json_load_nogc_s"],
             "unit": "s", "target": "", "met": None},
            {"metric": f"{prefix}: build_registry, warm, GC off (diagnostic)", "value": w["build_nogc_s"],
             "unit": "s", "target": "", "met": None},
            {"metric": f"{prefix}: json.load + Manifest + build, warm, GC off (diagnostic)", "value":
             w["whole_nogc_s"], "unit": "s", "target": "", "met": None},
            {"metric": f"{prefix}: import manifest + registry modules, cold", "value": c["import_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": f"{prefix}: json.load, cold", "value": c["json_load_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": f"{prefix}: Manifest(data), cold", "value": c["manifest_s"], "unit": "s", "target": "",
             "met": None},
            {"metric": f"{prefix}: build_registry, cold (first call)", "value": c["build_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": f"{prefix}: read_registry (load + build), cold", "value": c["whole_s"], "unit": "s",
             "target": target, "met": c["whole_s"] < REGISTRY_TARGET_S if big else None},
            {"metric": f"{prefix}: cold process, start to exit", "value": c["process_wall_s"], "unit": "s",
             "target": "", "met": None},
            {"metric": f"{prefix}: peak RSS (VmHWM), cold process", "value": c["peak_rss_mb"], "unit": "MB",
             "target": "", "met": None},
            {"metric": f"{prefix}: registry correct (endpoints, 0 problems)", "value":
             f"{r['check']['got']['endpoints']} endpoints, {r['check']['problem_count']} problems", "unit": "",
             "target": "all, 0", "met": r["check"]["ok"]},
        ]
    return out


def fmt_value(row: dict[str, Any]) -> str:
    value = row["value"]
    if isinstance(value, float):
        if row["unit"] == "s":
            return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
        if row["unit"] == "MB":
            return f"{value:.1f} MB" if abs(value) < 10 else f"{value:.0f} MB"
        return f"{value:.0f} {row['unit']}"
    return str(value)


def print_table(table: list[dict[str, Any]]) -> None:
    headers = ("metric", "value", "target", "met")
    cells = [(r["metric"], fmt_value(r), r["target"], {True: "yes", False: "NO", None: ""}[r["met"]]) for r in table]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description="dbt-mxcp benchmarks (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (sizes unchanged)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="model counts, comma-separated")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of build_registry (largest size)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    parser.add_argument("--only", default="import,example,serving,registry,drift,scale",
                        help="sections to run, comma-separated (import, example, serving, registry, drift, scale; "
                             "also mxcp: side by side with MXCP, not in the default run because it installs "
                             "two virtualenvs and takes about 6 minutes, 3 with --quick, on an idle machine)")
    args = parser.parse_args()
    sections = set(args.only.split(","))

    sizes = tuple(int(s) for s in args.sizes.split(","))
    import_runs, plugin_runs, repeats, cold_runs = (7, 3, 3, 1) if args.quick else (21, 7, 5, 3)
    example_runs = 1 if args.quick else 3
    drift_runs, drift_repeats, drift_cold = (3, 2, 1) if args.quick else (7, 5, 3)
    serve_calls, http_calls = (300, 25) if args.quick else (1000, 100)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="dbt-mxcp-bench-"))
    try:
        results: dict[str, Any] = {"environment": environment(), "command": "python bench/run.py"
                                   + (" --quick" if args.quick else "")
                                   + (f" --only {args.only}" if args.only != parser.get_default("only") else ""),
                                   "settings": {"import_runs": import_runs, "plugin_runs": plugin_runs,
                                                "repeats": repeats, "cold_runs": cold_runs, "sizes": sizes,
                                                "drift_runs": drift_runs, "drift_repeats": drift_repeats,
                                                "drift_cold_runs": drift_cold}}
        if "import" in sections:
            progress(f"import dbt_mxcp: {import_runs} runs, plugins: {plugin_runs} runs")
            results["import"] = bench_import(import_runs, plugin_runs, workdir)
        if sections & {"example", "serving"}:
            progress(f"shop example: dbt parse and dbt-mxcp commands, {example_runs} runs each")
            results["example"] = bench_example(example_runs, workdir)
        if "serving" in sections:
            from serve import bench_overhead, bench_serving

            progress(f"serving: {serve_calls} stdio calls per era, 16 HTTP clients x {http_calls} calls")
            results["serving"] = bench_serving(workdir / "shop", serve_calls, http_calls)
            results["overhead"] = bench_overhead(workdir / "shop", serve_calls)
        if "registry" in sections:
            progress(f"registry: sizes {sizes}, {repeats} warm repeats, {cold_runs} cold runs")
            results["registry"] = bench_registry(sizes, repeats, cold_runs, workdir)
        if "drift" in sections:
            progress(f"drift: {drift.DRIFT_MODELS} models, drift check/snapshot processes x {drift_runs}, "
                     f"{drift_cold} cold and {drift_repeats} warm step splits")
            # Reuses the registry section's synth_5000 manifest when it wrote one.
            drift_dir = workdir / f"synth_{drift.DRIFT_MODELS}"
            results["drift"] = drift.bench_drift(drift_dir, drift_runs, drift_repeats, drift_cold, progress)
        if "scale" in sections:
            import scale

            progress(f"scale: {scale.SIZES} models (validate, drift check, reload, memory) and a 10M-row relation")
            results["scale"] = scale.bench_scale(scale.SIZES, repeats, workdir / "scale", progress)
        if "mxcp" in sections:
            import mxcp_compare

            results["mxcp"] = mxcp_compare.bench(args.quick, workdir / "mxcp", progress)
        if args.profile and (workdir / f"synth_{max(sizes)}" / "target").is_dir():
            results["profile_build_registry"] = profile_build(workdir / f"synth_{max(sizes)}")
            print(results["profile_build_registry"])
        if args.profile and "drift" in results:
            drift_dir = workdir / f"synth_{drift.DRIFT_MODELS}"
            results["profile_drift_check"] = drift.profile_check(drift_dir, drift_dir / "baseline_unchanged.json")
            print(results["profile_drift_check"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    table = rows(results)
    print_table(table)
    print()
    if str(REGISTRY_TARGET_SIZE) in (results.get("registry") or {}):
        r = results["registry"][str(REGISTRY_TARGET_SIZE)]
        for label, value in (("warm", r["warm"]["whole_s"]), ("cold", r["cold"]["whole_s"])):
            verdict = "UNDER" if value < REGISTRY_TARGET_S else "NOT under"
            print(f"{REGISTRY_TARGET_SIZE} models, read_registry (load + build) ({label}): {value:.3f} s -- "
                  f"{verdict} {REGISTRY_TARGET_S:g} s")
    if "drift" in results:
        p = results["drift"]["process"]
        for label, value in (("unchanged", p["check_unchanged_s"]), ("changed", p["check_changed_s"])):
            verdict = "UNDER" if value < drift.DRIFT_TARGET_S else "NOT under"
            print(f"{drift.DRIFT_MODELS} models, dbt-mxcp drift check --baseline ({label} baseline, process): "
                  f"{value:.3f} s -- {verdict} {drift.DRIFT_TARGET_S:g} s")
    finish(results, table, args.out)
    return 0


def finish(results: dict[str, Any], table: list[dict[str, Any]], out: Path) -> None:
    """Say which targets `table` met, and write `results` with the table to `out` (every bench command ends so)."""
    results["table"] = table
    target_rows = [r for r in table if r["met"] is not None]
    missed = [r["metric"] for r in target_rows if not r["met"]]
    print(f"targets met: {len(target_rows) - len(missed)}/{len(target_rows)}"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out} ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
