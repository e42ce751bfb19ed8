"""Measurements that need a fresh interpreter; bench/run.py starts this with ``sys.executable``.

Each mode prints one JSON object on stdout and nothing else.

    _child.py plugins          in a process that already imported dbt: import dbt_mxcp, then dbt_mxcp.plugins
    _child.py cold split DIR   first json.load / Manifest / build_registry of DIR/target/manifest.json
    _child.py cold whole DIR   first read_registry (load + build) of DIR/target/manifest.json
"""

from __future__ import annotations

import sys
import time


def _top_level(names: set[str]) -> set[str]:
    return {n.split(".", 1)[0] for n in names}


def plugins() -> dict[str, object]:
    # What the `dbt` command has imported by the time its plugin manager looks for dbt_* modules.
    import importlib

    t0 = time.perf_counter()
    import dbt.cli.main
    import dbt.plugins.manager  # noqa: F401

    dbt_import_s = time.perf_counter() - t0
    before = set(sys.modules)
    t0 = time.perf_counter()
    module = importlib.import_module("dbt_mxcp")
    t1 = time.perf_counter()
    found = module.plugins
    t2 = time.perf_counter()
    again = module.plugins
    t3 = time.perf_counter()
    added = set(sys.modules) - before
    return {
        "dbt_import_s": dbt_import_s,
        "import_s": t1 - t0,
        "plugins_s": t2 - t1,
        "plugins_again_s": t3 - t2,
        "plugins": [f"{p.__module__}.{p.__qualname__}" for p in found],
        "same_on_second_access": [p.__qualname__ for p in again] == [p.__qualname__ for p in found],
        "added_top_level": sorted(_top_level(added) - _top_level(before)),
        "added_module_count": len(added),
    }


def _peak_rss_kb() -> int:
    """This process's peak resident set size, in KiB.

    VmHWM from /proc, because getrusage's ru_maxrss is not this process's own: Linux carries the
    parent's peak across fork and exec, so a child of a large bench/run.py would report the parent.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; may include the parent's


def _ru_maxrss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cold(how: str, project_dir: str) -> dict[str, object]:
    from pathlib import Path

    start_rss = _peak_rss_kb()
    t0 = time.perf_counter()
    from dbt_mxcp.manifest import Manifest
    from dbt_mxcp.registry import build_registry

    out: dict[str, object] = {"import_s": time.perf_counter() - t0, "rss_after_import_kb": _peak_rss_kb(),
                              "rss_start_kb": start_rss}
    project = Path(project_dir)
    target = project / "target"
    if how == "split":
        import json

        t0 = time.perf_counter()
        with (target / "manifest.json").open("rb") as fh:
            data = json.load(fh)
        t1 = time.perf_counter()
        manifest = Manifest(data)
        t2 = time.perf_counter()
        registry, problems = build_registry(manifest, project)
        t3 = time.perf_counter()
        out.update(json_load_s=t1 - t0, manifest_s=t2 - t1, build_s=t3 - t2, total_s=t3 - t0)
    else:
        from dbt_mxcp.load import read_registry

        t0 = time.perf_counter()
        _, registry, problems = read_registry(target, project, freeze=True)
        out.update(total_s=time.perf_counter() - t0)
    out.update(endpoints=len(registry.endpoints), problems=len(problems), peak_rss_kb=_peak_rss_kb(),
               ru_maxrss_kb=_ru_maxrss_kb())
    return out


def main(argv: list[str]) -> None:
    import json

    mode = argv[0]
    if mode == "plugins":
        result = plugins()
    elif mode == "cold":
        result = cold(argv[1], argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
