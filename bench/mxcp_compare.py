"""Side by side with MXCP 0.12.3 (issue 8): the same tool served by both products, in one run.

    python bench/mxcp_compare.py            # alone: prints a table, writes bench/results/mxcp.json
    python bench/mxcp_compare.py --quick    # fewer calls and spawns
    python bench/run.py --only mxcp         # as a section of bench/run.py (not in its default run)

What it does:

1. Installs MXCP (`mxcp==0.12.3 dbt-core==1.11.11`; without the dbt-core pin the install
   fails offline) into its own virtualenv, kept in bench/results/mxcp-venv and reused while its
   requirements are unchanged, and dbt-mxcp with a plain `pip install <repo>` into a fresh one.
   Install size of each: packages in `pip list`, and `du` of the venv.
2. Builds examples/shop with that dbt-mxcp install's dbt, then serves `get_customer` (a point
   lookup on the 200-row customers table) from both products, each in two variants:
   `bare` (audit off, no policies) and `guarded` (audit on, the output policy on). MXCP's
   project (bench/mxcp/) reads a copy of the same shop.duckdb with the SQL dbt-mxcp generates.
3. For each product and variant: warm `tools/call` latency over stdio and over streamable HTTP
   (one client, sequential; p50/p95/p99), HTTP throughput at 1/4/16/64 concurrent clients (each
   its own session), process start to first tool result over stdio (median of several spawns),
   and the server's peak RSS (VmHWM). Every call is checked (not an error, the customer asked
   for), and the rows of customers 1..200 must be the same from both products.
   Within a variant, each step runs for both products before the next, taking turns (sequential
   calls in blocks, spawns and concurrency levels alternately), so that load from other work on
   the machine drifts onto both alike.

Client and servers share this machine's cores; the client is the MCP SDK beside this
interpreter (`mcp` 2.x, handshake-era protocol for both, since MXCP's server is `mcp` 1.x).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TEMPLATES = BENCH_DIR / "mxcp"
MXCP_VENV = BENCH_DIR / "results" / "mxcp-venv"
RESULTS = BENCH_DIR / "results" / "mxcp.json"
# The dbt-core pin is what makes MXCP install from the package index alone (the reference, §10).
MXCP_REQUIREMENTS = ["mxcp==0.12.3", "dbt-core==1.11.11"]

TOOL = "get_customer"
VARIANTS = {"bare": "audit off, no policies", "guarded": "audit + policies on"}
PRODUCTS = ("dbt-mxcp", "mxcp")
CONCURRENCY = (1, 4, 16, 64)
WARMUP = 50
# Sequential calls go to the two servers in blocks, taking turns, so that load from anything else
# on the machine falls on both alike while each server stays warm within a block (calling them
# strictly in turns would time each call on a server woken from idle, not a warm one).
BLOCK, BLOCK_WARMUP = 50, 3
CUSTOMERS = 200  # rows in the shop's customers table; calls cycle through ids 1..200

# The targets.
LATENCY_RATIO_TARGET = 10.0  # MXCP p50 / ours p50, audit and policies on
START_TARGET_S = 0.8
RSS_TARGET_MB = 100.0


class BenchError(RuntimeError):
    pass


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latency(samples: list[float]) -> dict[str, float]:
    return {"p50_s": statistics.median(samples), "p95_s": _percentile(samples, 0.95),
            "p99_s": _percentile(samples, 0.99), "mean_s": statistics.fmean(samples)}


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def _children() -> set[int]:
    """Our direct child processes (the stdio client spawns the server from one of our threads)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return proc.stdout


# ---- installs ----------------------------------------------------------------------------------

def _venv(path: Path, requirements: list[str], reuse: bool) -> Path:
    """A virtualenv at `path` with `requirements` pip-installed; kept if its marker says the same."""
    marker = path / ".bench-requirements"
    if reuse and marker.is_file() and marker.read_text() == "\n".join(requirements):
        return path
    shutil.rmtree(path, ignore_errors=True)
    # From the base interpreter, not this (dev) venv, so nothing of ours leaks in.
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", path])
    _run([path / "bin" / "python", "-m", "pip", "install", "--quiet", *requirements])
    marker.write_text("\n".join(requirements))
    return path


def install_size(venv: Path) -> dict[str, Any]:
    listed = json.loads(_run([venv / "bin" / "python", "-m", "pip", "list", "--format=json"]))
    du_kb = int(_run(["du", "-sk", venv]).split()[0])
    return {"packages": len(listed), "venv_mb": du_kb / 1024,
            "versions": {p["name"].lower(): p["version"] for p in listed}}


# ---- projects ----------------------------------------------------------------------------------

def _dbt_env() -> dict[str, str]:
    return {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


def build_shop(workdir: Path, venv: Path) -> Path:
    project = workdir / "shop"
    shutil.copytree(REPO / "examples" / "shop", project,
                    ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "seeds/*.csv"))
    _run([sys.executable, "scripts/generate_seeds.py"], cwd=project)
    _run([venv / "bin" / "dbt", "build", "--profiles-dir", "."], cwd=project, env=_dbt_env())
    return project


def our_project(shop: Path, dest: Path, variant: str, venv: Path) -> Path:
    """A copy of the built shop; `bare` drops get_customer's policy, audit follows the variant."""
    import yaml

    shutil.copytree(shop, dest, ignore=shutil.ignore_patterns("logs", "partial_parse.msgpack"))
    schema_path = dest / "models" / "marts" / "schema.yml"
    schema = yaml.safe_load(schema_path.read_text())
    tool = next(t for m in schema["models"] for t in m.get("config", {}).get("meta", {}).get("mxcp", {})
                .get("tools", []) if t["name"] == TOOL)
    if not tool.get("policies"):
        raise BenchError(f"{TOOL} in examples/shop has no policies: the guarded variant would not be guarded")
    if variant == "bare":
        del tool["policies"]
        schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    # Written for both variants so that a ~/.dbt/mxcp.yml cannot change the audit setting.
    (dest / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"enabled": variant == "guarded"}}))
    _run([venv / "bin" / "dbt", "parse", "--profiles-dir", "."], cwd=dest, env=_dbt_env())
    return dest


def mxcp_project(shop: Path, dest: Path, variant: str) -> Path:
    """MXCP's project from bench/mxcp/: the same tool over a copy of the same warehouse."""
    import yaml

    site = yaml.safe_load((TEMPLATES / "mxcp-site.yml").read_text())
    site["profiles"]["bench"]["audit"]["enabled"] = variant == "guarded"
    tool = yaml.safe_load((TEMPLATES / "get_customer.yml").read_text())
    if variant == "bare":
        del tool["tool"]["policies"]
    for sub in ("tools", "data", "audit", "home"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "mxcp-site.yml").write_text(yaml.safe_dump(site, sort_keys=False))
    (dest / "tools" / f"{TOOL}.yml").write_text(yaml.safe_dump(tool, sort_keys=False))
    # Same file name, so the catalog is "shop" and the SQL is the one dbt-mxcp runs.
    shutil.copy2(shop / "shop.duckdb", dest / "data" / "shop.duckdb")
    shutil.copy2(TEMPLATES / "config.yml", dest / "config.yml")
    return dest


@dataclass
class Server:
    product: str
    variant: str
    project: Path
    stdio: list[str]
    http: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


def our_server(project: Path, variant: str, venv: Path) -> Server:
    base = [str(venv / "bin" / "dbt-mxcp"), "serve", "--project-dir", str(project), "--profiles-dir", str(project)]
    return Server("dbt-mxcp", variant, project, base,
                  lambda port: [*base, "--transport", "http", "--port", str(port)],
                  {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})


def mxcp_server(project: Path, variant: str, venv: Path) -> Server:
    exe = str(venv / "bin" / "mxcp")
    # HOME in the project keeps MXCP's user files (~/.mxcp) out of the real home.
    env = {"MXCP_DISABLE_ANALYTICS": "1", "HOME": str(project / "home"), "MXCP_CONFIG": str(project / "config.yml")}
    return Server("mxcp", variant, project, [exe, "serve", "--transport", "stdio"],
                  lambda port: [exe, "serve", "--transport", "streamable-http", "--port", str(port)], env)


# ---- calls and checks --------------------------------------------------------------------------

def _row(result: Any, customer_id: int, where: str) -> dict[str, Any]:
    """The customer row of one tools/call result; raises unless it is a good answer for `customer_id`."""
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise BenchError(f"{where}: {TOOL}({customer_id}) failed: {text[:500]}")
    data = result.structured_content
    if data is None:
        data = json.loads(result.content[0].text)
    if isinstance(data, dict) and set(data) == {"result"}:  # a wrapped non-object result
        data = data["result"]
    if not isinstance(data, dict) or data.get("customer_id") != customer_id:
        raise BenchError(f"{where}: {TOOL}({customer_id}) returned {str(data)[:300]}")
    return data


_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ]00:00:00(?:\.0+)?)?")


def _normal(row: dict[str, Any]) -> dict[str, Any]:
    """The row with dates as YYYY-MM-DD and numbers as floats to the cent, to compare across products."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = round(float(value), 2)
        elif isinstance(value, str) and (m := _DATE.fullmatch(value)):
            value = m.group(1)
        out[key] = value
    return out


def _cid(i: int) -> int:
    return 1 + i % CUSTOMERS


def _stdio_transport(server: Server, errlog: Any) -> Any:
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=server.stdio[0], args=server.stdio[1:], env=server.env,
                                   cwd=str(server.project))
    return stdio_client(params, errlog=errlog)


def _alternate(servers: list[Server], i: int) -> list[Server]:
    """Both servers, in turns: the one measured first changes every round."""
    return servers if i % 2 == 0 else servers[::-1]


async def _stdio_pair(servers: list[Server], calls: int, errlogs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both products' stdio servers open at once and called in turns (blocks of BLOCK calls);
    then every customer's row and each server's peak RSS."""
    from mcp import Client

    clients: dict[str, Any] = {}
    pids: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        for s in servers:
            where = f"{s.product} ({s.variant}) stdio"
            before = _children()
            clients[s.product] = client = await stack.enter_async_context(
                Client(_stdio_transport(s, errlogs[s.product]), mode="legacy"))
            for i in range(WARMUP):
                _row(await client.call_tool(TOOL, {"customer_id": _cid(i)}), _cid(i), where)
            spawned = _children() - before
            if len(spawned) != 1:
                raise BenchError(f"{where}: expected one new server process, found {sorted(spawned)}")
            pids[s.product] = spawned.pop()
        samples, rows = await _timed_turns(servers, clients, calls, "stdio")
        rss = {p: _peak_rss_mb(pid) for p, pid in pids.items()}
    return {p: {"calls": calls, **_latency(samples[p]), "peak_rss_mb": rss[p], "rows": rows[p]} for p in samples}


async def _first_result(server: Server, errlog: Any) -> float:
    from mcp import Client

    t0 = time.perf_counter()
    async with Client(_stdio_transport(server, errlog), mode="legacy") as client:
        result = await client.call_tool(TOOL, {"customer_id": 7})
        elapsed = time.perf_counter() - t0
        _row(result, 7, f"{server.product} ({server.variant}) first call")
    return elapsed


async def _http_sequential_pair(servers: list[Server], urls: dict[str, str], calls: int) -> dict[str, Any]:
    """One client per server, sequential calls, in blocks taking turns as over stdio."""
    from mcp import Client

    async with contextlib.AsyncExitStack() as stack:
        clients = {s.product: await stack.enter_async_context(Client(urls[s.product], mode="legacy"))
                   for s in servers}
        for s in servers:
            for i in range(WARMUP):
                _row(await clients[s.product].call_tool(TOOL, {"customer_id": _cid(i)}), _cid(i), s.product)
        samples, _ = await _timed_turns(servers, clients, calls, "http")
    return {p: {"calls": calls, **_latency(v)} for p, v in samples.items()}


async def _timed_turns(servers: list[Server], clients: dict[str, Any], calls: int, transport: str,
                       ) -> tuple[dict[str, list[float]], dict[str, dict[int, dict[str, Any]]]]:
    """`calls` timed calls per product, in blocks of BLOCK taking turns; every answer checked off the clock.

    Returns the round trips and, per product, the row each customer id answered with.
    """
    samples: dict[str, list[float]] = {s.product: [] for s in servers}
    rows: dict[str, dict[int, dict[str, Any]]] = {s.product: {} for s in servers}
    for block in range(0, calls, BLOCK):
        for s in _alternate(servers, block // BLOCK):
            where = f"{s.product} ({s.variant}) {transport}"
            for i in range(BLOCK_WARMUP):  # the server was idle during the other's block
                _row(await clients[s.product].call_tool(TOOL, {"customer_id": _cid(i)}), _cid(i), where)
            for i in range(block, min(calls, block + BLOCK)):
                cid = _cid(i)
                t0 = time.perf_counter()
                result = await clients[s.product].call_tool(TOOL, {"customer_id": cid})
                samples[s.product].append(time.perf_counter() - t0)
                rows[s.product].setdefault(cid, _row(result, cid, where))
    return samples, rows


async def _http_throughput(url: str, clients: int, calls_each: int, where: str) -> dict[str, Any]:
    import anyio
    from mcp import Client

    errors: list[str] = []
    latencies: list[float] = []

    async def one(client: Any, k: int) -> None:
        for i in range(calls_each):
            cid = _cid(k * calls_each + i)
            t0 = time.perf_counter()
            try:
                _row(await client.call_tool(TOOL, {"customer_id": cid}), cid, where)
            except Exception as exc:  # counted, not fatal: errors under load are a result
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            latencies.append(time.perf_counter() - t0)

    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(Client(url, mode="legacy")) for _ in range(clients)]
        for c in opened:  # every session open and one call made before the clock starts
            _row(await c.call_tool(TOOL, {"customer_id": 7}), 7, where)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k, c in enumerate(opened):
                tg.start_soon(one, c, k)
        elapsed = time.perf_counter() - t0
    total = clients * calls_each
    return {"clients": clients, "calls": total, "seconds": elapsed, "calls_per_s": total / elapsed,
            "errors": len(errors), "first_errors": errors[:3], "p50_s": statistics.median(latencies)}


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise BenchError(f"server exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.perf_counter() - t0
        except OSError:
            if time.perf_counter() - t0 > timeout:
                raise BenchError(f"nothing listening on {port} after {timeout} s") from None
            time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_pair(servers: list[Server], calls: int, spawns: int, total_calls: int, logs: Path,
               progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every figure for both products in one variant, each step for both before the next."""
    import anyio

    variant = servers[0].variant
    out: dict[str, dict[str, Any]] = {}
    loadavg: list[tuple[str, float]] = [("start", os.getloadavg()[0])]
    with contextlib.ExitStack() as stack:
        errlogs = {s.product: stack.enter_context((logs / f"{s.product}-{variant}.log").open("a")) for s in servers}
        progress(f"  stdio: {calls} calls each, in blocks of {BLOCK} taking turns")
        out = anyio.run(_stdio_pair, servers, calls, errlogs)
        loadavg.append(("stdio", os.getloadavg()[0]))
        progress(f"  stdio: {spawns} spawns to first result each, in turns")
        starts: dict[str, list[float]] = {s.product: [] for s in servers}
        for k in range(spawns):
            for s in _alternate(servers, k):
                starts[s.product].append(anyio.run(_first_result, s, errlogs[s.product]))
        for p, v in starts.items():
            out[p].update(start_to_first_s=statistics.median(v), start_samples_s=v)
        loadavg.append(("spawns", os.getloadavg()[0]))
        ports = {s.product: _free_port() for s in servers}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for s in servers:  # both listening at once; the idle one costs next to nothing
                procs[s.product] = subprocess.Popen(
                    s.http(ports[s.product]), cwd=s.project, env={**os.environ, **s.env}, stdin=subprocess.DEVNULL,
                    stdout=errlogs[s.product], stderr=errlogs[s.product])
                out[s.product]["http"] = {"listening_s": _wait_port(ports[s.product], procs[s.product]),
                                          "throughput": []}
            urls = {p: f"http://127.0.0.1:{port}/mcp" for p, port in ports.items()}
            progress(f"  http: {calls} sequential calls each, in blocks of {BLOCK} taking turns")
            for p, seq in anyio.run(_http_sequential_pair, servers, urls, calls).items():
                out[p]["http"]["sequential"] = seq
            loadavg.append(("http sequential", os.getloadavg()[0]))
            for n, clients in enumerate(CONCURRENCY):
                progress(f"  http: {clients} concurrent clients")
                for s in _alternate(servers, n):
                    calls_each = max(5, total_calls // clients)
                    out[s.product]["http"]["throughput"].append(anyio.run(
                        _http_throughput, urls[s.product], clients, calls_each, f"{s.product} ({variant}) http"))
            loadavg.append(("http throughput", os.getloadavg()[0]))
            for p, proc in procs.items():
                out[p]["http"]["peak_rss_mb"] = _peak_rss_mb(proc.pid)
        finally:
            for proc in procs.values():
                _stop(proc)
    for p in out:
        out[p]["http"]["throughput"].sort(key=lambda t: t["clients"])
        out[p]["loadavg_1min"] = loadavg
    return out


def compare_rows(variant: str, ours: dict[int, dict[str, Any]], theirs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Do both products return the same rows, and does the variant's policy show (email dropped)?

    A key absent on one side and null on the other counts as the same: MXCP's structuredContent
    has every property of the return type, so the email its policy removed comes back as null.
    """
    mismatched = []
    for cid in sorted(set(ours) | set(theirs)):
        a, b = _normal(ours.get(cid, {})), _normal(theirs.get(cid, {}))
        diff = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        if diff:
            mismatched.append({"customer_id": cid, "dbt-mxcp vs mxcp": diff})
    want_email = variant == "bare"
    email_ok = all(bool(r.get("email")) == want_email for r in (*ours.values(), *theirs.values()))
    null_email = {p: sum(1 for r in rows.values() if "email" in r and r["email"] is None)
                  for p, rows in (("dbt-mxcp", ours), ("mxcp", theirs))}
    return {"customers": len(set(ours) & set(theirs)), "mismatched": len(mismatched), "first_mismatches":
            mismatched[:3], "email_returned": want_email, "email_as_expected": email_ok,
            "rows_with_email_null": null_email,
            "ok": not mismatched and email_ok and len(ours) == len(theirs) == CUSTOMERS}


# ---- the section -------------------------------------------------------------------------------

def bench(quick: bool, workdir: Path, progress: Callable[[str], None] = _progress,
          reuse_mxcp: bool = True) -> dict[str, Any]:
    calls, spawns, total_calls = (300, 3, 200) if quick else (1000, 7, 800)
    out: dict[str, Any] = {"tool": TOOL, "settings": {"calls": calls, "warmup": WARMUP, "spawns": spawns,
                                                      "throughput_calls_per_level": total_calls,
                                                      "concurrency": list(CONCURRENCY)}}
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"mxcp: venvs ({MXCP_VENV} reused if present; dbt-mxcp fresh)")
    t0 = time.perf_counter()
    mxcp_venv = _venv(MXCP_VENV, MXCP_REQUIREMENTS, reuse_mxcp)
    mxcp_install_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    our_venv = _venv(workdir / "dbt-mxcp-venv", [str(REPO)], reuse=False)
    out["install"] = {"dbt-mxcp": {**install_size(our_venv), "requirements": ["dbt-mxcp (pip install <repo>)"],
                                   "install_s": time.perf_counter() - t0},
                      "mxcp": {**install_size(mxcp_venv), "requirements": MXCP_REQUIREMENTS,
                               "install_s": mxcp_install_s}}
    progress("mxcp: building examples/shop")
    shop = build_shop(workdir, our_venv)
    logs = workdir / "server-logs"
    logs.mkdir()
    out["variants"] = {}
    for variant in VARIANTS:
        servers = (our_server(our_project(shop, workdir / f"ours-{variant}", variant, our_venv), variant, our_venv),
                   mxcp_server(mxcp_project(shop, workdir / f"mxcp-{variant}", variant), variant, mxcp_venv))
        progress(f"mxcp: variant {variant} ({VARIANTS[variant]})")
        try:
            measured = bench_pair(list(servers), calls, spawns, total_calls, logs, progress)
        except BenchError as exc:
            tails = "\n".join(f"--- {p.name} (last lines)\n" + "\n".join(p.read_text().splitlines()[-15:])
                              for p in sorted(logs.iterdir()))
            raise BenchError(f"{exc}\n{tails}") from exc
        data = compare_rows(variant, measured["dbt-mxcp"].pop("rows"), measured["mxcp"].pop("rows"))
        measured["data"] = data
        measured["ratios"] = ratios(measured["dbt-mxcp"], measured["mxcp"])
        out["variants"][variant] = measured
    out["targets"] = targets(out)
    return out


def _flat(m: dict[str, Any]) -> dict[str, float]:
    """The figures of one product and variant, flat, for ratios and rows."""
    flat = {f"stdio_{k}": m[k] for k in ("p50_s", "p95_s", "p99_s")}
    flat.update({f"http_{k}": m["http"]["sequential"][k] for k in ("p50_s", "p95_s", "p99_s")})
    flat.update({f"http_calls_per_s_{t['clients']}": t["calls_per_s"] for t in m["http"]["throughput"]})
    flat.update(start_to_first_s=m["start_to_first_s"], stdio_peak_rss_mb=m["peak_rss_mb"],
                http_peak_rss_mb=m["http"]["peak_rss_mb"])
    return flat


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """MXCP / dbt-mxcp for every figure (above 1: MXCP is slower or larger, except calls/s)."""
    a, b = _flat(ours), _flat(theirs)
    return {k: b[k] / a[k] for k in a}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, from the variant with audit and policies on."""
    g = results["variants"]["guarded"]
    ours = g["dbt-mxcp"]
    return [
        {"target": "p50 latency, MXCP / dbt-mxcp, audit + policies on, stdio", "threshold": ">= 10x (issue)",
         "value": g["ratios"]["stdio_p50_s"], "met": g["ratios"]["stdio_p50_s"] >= LATENCY_RATIO_TARGET},
        {"target": "p50 latency, MXCP / dbt-mxcp, audit + policies on, http", "threshold": ">= 10x (issue)",
         "value": g["ratios"]["http_p50_s"], "met": g["ratios"]["http_p50_s"] >= LATENCY_RATIO_TARGET},
        {"target": "dbt-mxcp start to first tool result, audit + policies on", "threshold": "<= 0.8 s (issue)",
         "value": ours["start_to_first_s"], "met": ours["start_to_first_s"] <= START_TARGET_S},
        {"target": "dbt-mxcp peak RSS, audit + policies on, stdio", "threshold": "<= 100 MB (issue)",
         "value": ours["peak_rss_mb"], "met": ours["peak_rss_mb"] <= RSS_TARGET_MB},
        {"target": "dbt-mxcp peak RSS, audit + policies on, http after 64 clients", "threshold": "<= 100 MB (issue)",
         "value": ours["http"]["peak_rss_mb"], "met": ours["http"]["peak_rss_mb"] <= RSS_TARGET_MB},
    ]


# ---- table -------------------------------------------------------------------------------------

def _fmt(key: str, value: float) -> str:
    if key.endswith("_s"):
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if key.endswith("_mb"):
        return f"{value:.0f} MB"
    return f"{value:.0f}"


_LABELS = {
    "stdio_p50_s": "stdio tools/call p50", "stdio_p95_s": "stdio tools/call p95", "stdio_p99_s": "stdio tools/call p99",
    "http_p50_s": "http tools/call p50 (1 client)", "http_p95_s": "http tools/call p95 (1 client)",
    "http_p99_s": "http tools/call p99 (1 client)", "start_to_first_s": "stdio start to first tool result",
    "stdio_peak_rss_mb": "peak RSS, stdio", "http_peak_rss_mb": "peak RSS, http after the load",
}


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for bench/run.py's table: each figure for both products and their ratio."""
    out: list[dict[str, Any]] = []
    inst = results["install"]
    for key, label in (("packages", "packages"), ("venv_mb", "venv size")):
        a, b = inst["dbt-mxcp"][key], inst["mxcp"][key]
        out.append({"metric": f"vs MXCP: install, {label}", "value": f"dbt-mxcp {_fmt(key, a)} | MXCP "
                    f"{_fmt(key, b)} | x{b / a:.2f}", "unit": "", "target": "", "met": None})
    for variant, m in results["variants"].items():
        a, b = _flat(m["dbt-mxcp"]), _flat(m["mxcp"])
        for key in a:
            label = _LABELS.get(key) or f"http calls/s, {key.rsplit('_', 1)[1]} clients"
            out.append({"metric": f"vs MXCP, {VARIANTS[variant]}: {label}", "value":
                        f"dbt-mxcp {_fmt(key, a[key])} | MXCP {_fmt(key, b[key])} | x{b[key] / a[key]:.2f}",
                        "unit": "", "target": "", "met": None})
        errors = {p: sum(t["errors"] for t in m[p]["http"]["throughput"]) for p in PRODUCTS}
        out.append({"metric": f"vs MXCP, {VARIANTS[variant]}: http errors under load", "value":
                    f"dbt-mxcp {errors['dbt-mxcp']} | MXCP {errors['mxcp']}", "unit": "", "target": "0",
                    "met": errors["dbt-mxcp"] == 0})
        d = m["data"]
        out.append({"metric": f"vs MXCP, {VARIANTS[variant]}: same rows from both (customers 1..{CUSTOMERS})",
                    "value": f"{d['customers']} compared, {d['mismatched']} differ, email "
                    f"{'returned' if d['email_returned'] else 'dropped'}: {d['email_as_expected']}",
                    "unit": "", "target": "all same", "met": d["ok"]})
    for t in results["targets"]:
        value = f"x{t['value']:.1f}" if "MXCP /" in t["target"] else _fmt("_mb" if "RSS" in t["target"] else "_s",
                                                                           t["value"])
        out.append({"metric": f"vs MXCP target: {t['target']}", "value": value, "unit": "",
                    "target": t["threshold"], "met": t["met"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="dbt-mxcp side by side with MXCP 0.12.3 (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="fewer calls and spawns")
    parser.add_argument("--fresh-mxcp", action="store_true", help=f"reinstall MXCP even if {MXCP_VENV} is there")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH_DIR))
    from run import environment, finish, print_table

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="dbt-mxcp-vs-mxcp-"))
    try:
        section = bench(args.quick, workdir, reuse_mxcp=not args.fresh_mxcp)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {"environment": environment(), "command": "python bench/mxcp_compare.py"
               + (" --quick" if args.quick else ""), "mxcp": section,
               "elapsed_s": time.perf_counter() - started}
    table = rows(section)
    print_table(table)
    finish(results, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
