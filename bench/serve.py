"""Serving benchmarks: `dbt-mxcp serve` measured with the MCP SDK's Python client.

- warm `tools/call` round trip over stdio, both protocol eras (median, p95, p99);
- throughput over HTTP with 16 concurrent clients (each its own session);
- process start to first tool result (stdio: spawn, handshake, first call);
- the server process's peak RSS (VmHWM).

The tool is `get_customer` of examples/shop: a point lookup on a 200-row table, with its output
policy (filter_sensitive_fields) on. Client and server share this machine's two cores.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
TOOL, ARGS = "get_customer", {"customer_id": 7}


def _server_args(project: Path) -> list[str]:
    return ["serve", "--project-dir", str(project), "--profiles-dir", str(project)]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _stdio_round_trips(project: Path, mode: str, calls: int) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=str(BIN / "dbt-mxcp"), args=_server_args(project))
    started = time.perf_counter()
    async with Client(params, mode=mode) as client:
        first = await client.call_tool(TOOL, ARGS)
        start_to_first = time.perf_counter() - started
        assert not first.is_error, first.content
        for _ in range(50):  # warm-up
            await client.call_tool(TOOL, ARGS)
        samples = []
        for i in range(calls):
            t0 = time.perf_counter()
            await client.call_tool(TOOL, {"customer_id": 1 + i % 200})
            samples.append(time.perf_counter() - t0)
    return {"mode": mode, "calls": calls, "start_to_first_s": start_to_first, "p50_s": statistics.median(samples),
            "p95_s": _percentile(samples, 0.95), "p99_s": _percentile(samples, 0.99)}


async def _http_throughput(url: str, clients: int, calls_each: int) -> dict[str, Any]:
    import anyio

    errors = 0

    async def one(client: Any) -> None:
        nonlocal errors
        for i in range(calls_each):
            result = await client.call_tool(TOOL, {"customer_id": 1 + i % 200})
            errors += bool(result.is_error)

    async with _clients(url, clients) as opened:
        for c in opened:  # warm-up: every session open and one call made
            await c.call_tool(TOOL, ARGS)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in opened:
                tg.start_soon(one, c)
        elapsed = time.perf_counter() - t0
    total = clients * calls_each
    return {"clients": clients, "calls": total, "seconds": elapsed, "calls_per_s": total / elapsed, "errors": errors}


class _clients:
    """Open `n` SDK clients to one URL (each its own session)."""

    def __init__(self, url: str, n: int) -> None:
        from contextlib import AsyncExitStack

        self.url, self.n, self.stack = url, n, AsyncExitStack()

    async def __aenter__(self) -> list[Any]:
        from mcp import Client

        return [await self.stack.enter_async_context(Client(self.url, mode="legacy")) for _ in range(self.n)]

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_serving(project: Path, calls: int, http_calls_each: int) -> dict[str, Any]:
    """All serving figures for the built project at `project`."""
    import anyio

    out: dict[str, Any] = {"tool": TOOL}
    out["stdio"] = [anyio.run(_stdio_round_trips, project, mode, calls) for mode in ("legacy", "auto")]
    for json_response in (False, True):
        port = _free_port()
        extra = ["--json-response"] if json_response else []
        proc = subprocess.Popen([str(BIN / "dbt-mxcp"), *_server_args(project), "--transport", "http", "--port",
                                 str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            result = anyio.run(_http_throughput, f"http://127.0.0.1:{port}/mcp", 16, http_calls_each)
            result["json_response"] = json_response
            result["server_peak_rss_mb"] = _peak_rss_mb(proc.pid)
            out.setdefault("http", []).append(result)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def bench_overhead(project: Path, calls: int) -> dict[str, Any]:
    """What policies and the audit log add to one call of the pipeline (in-process, p50)."""
    import dataclasses
    import tempfile

    from dbt_mxcp.audit.auditor import Auditor
    from dbt_mxcp.audit.jsonl import JsonlSink
    from dbt_mxcp.load import load
    from dbt_mxcp.pipeline import Pipeline
    from dbt_mxcp.project import Flags
    from dbt_mxcp.warehouse import open_warehouse

    loaded = load(Flags(project_dir=str(project), profiles_dir=str(project)), freeze=False)
    warehouse = open_warehouse(loaded.require_warehouse())
    endpoint = loaded.registry.get("tool", TOOL)
    assert endpoint is not None and endpoint.output_rules, "the benchmark tool must have a policy"
    bare = dataclasses.replace(endpoint, input_rules=(), output_rules=())
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        auditor = Auditor(JsonlSink(Path(scratch) / "audit.jsonl", fsync="interval"), b"k" * 32, strict=True)
        cases = {"neither": (bare, None), "policies": (endpoint, None), "policies + audit": (endpoint, auditor)}
        for label, (ep, audit) in cases.items():
            pipeline = Pipeline(loaded.registry, warehouse, auditor=audit)
            for i in range(100):
                pipeline.call(ep, {"customer_id": 1 + i % 200}, None)
            samples = []
            for i in range(calls):
                t0 = time.perf_counter()
                pipeline.call(ep, {"customer_id": 1 + i % 200}, None)
                samples.append(time.perf_counter() - t0)
            out[label] = statistics.median(samples)
        auditor.close()
    warehouse.close()
    out["added_by_policies_and_audit"] = out["policies + audit"] - out["neither"]
    return out
