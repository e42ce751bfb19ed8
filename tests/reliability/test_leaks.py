"""Resource leaks across server start/stop cycles (issue 8): file descriptors and threads come back.

Each cycle does in this process what one `dbt-mxcp serve` does: `LiveProject.start()` (manifest,
registry, warehouse snapshot, audit log), `McpAdapter`, real MCP calls with the SDK client, then
`live.close()` as the CLI's `finally` does. Every few cycles (every 4th in CI, every 2nd under --long)
the calls go over HTTP: `serve_http` (the streamable HTTP app under uvicorn, with the reload watcher and
the signal tasks) in its own `anyio.run` on a free port, stopped as the SIGTERM handler stops it
(`should_exit`); the other cycles connect the client to the adapter's SDK server in memory. uvicorn
needs ~0.1 s to notice `should_exit`, so all-HTTP cycles would not fit CI's minute.

Open file descriptors (/proc/self/fd), Python threads (threading.enumerate()) and OS threads
(/proc/self/task, which also counts DuckDB's native worker threads) are measured after one warm-up
cycle of each kind (lazily created process-wide singletons are made then) and after the last; each
must come back to its baseline, within a small fixed slack.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
from mcp import Client

from dbt_mxcp.project import Flags
from dbt_mxcp.server import transports
from dbt_mxcp.server.adapter import McpAdapter
from dbt_mxcp.server.live import LiveProject
from tests.helpers import REPO, Project, free_port
from tests.reliability.conftest import Scale

SLACK_FDS = 2  # lazily opened process-wide handles not yet opened by the warm-up cycle
SLACK_THREADS = 1
SETTLE = 15.0  # seconds for threads and sockets of the last cycle to finish closing
CYCLE_TIMEOUT = 60.0


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return out


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settled(baseline: dict[str, Any]) -> dict[str, Any]:
    """The counts once they are back within the slack of `baseline`, or the last ones seen at the deadline."""
    deadline = time.monotonic() + SETTLE
    while True:
        now = {"fds": _fds(), "threads": _threads(), "os_threads": _os_threads()}
        if (len(now["fds"]) <= len(baseline["fds"]) + SLACK_FDS
                and len(now["threads"]) <= len(baseline["threads"]) + SLACK_THREADS
                and now["os_threads"] <= baseline["os_threads"] + SLACK_THREADS) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment `dbt-mxcp serve` gets in the other tests (tests.helpers.env), in this process."""
    for key in list(os.environ):
        if key.startswith("DBT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    monkeypatch.setenv("DBT_MXCP_PACKAGE_PATH", str(REPO))


@pytest.fixture
def uvicorn_servers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every uvicorn server `serve_http` makes, so that a cycle can stop it as the SIGTERM handler does."""
    made: list[Any] = []
    original: Callable[[], Any] = transports._uvicorn_server_class

    def recording() -> Any:
        base = original()

        class Recording(base):  # type: ignore[misc, valid-type]
            def __init__(self, config: Any) -> None:
                super().__init__(config)
                made.append(self)

        return Recording

    monkeypatch.setattr(transports, "_uvicorn_server_class", recording)
    return made


async def _started(made: list[Any], timeout: float = 20.0) -> Any:
    with anyio.fail_after(timeout):
        while not (made and made[-1].started):
            await anyio.sleep(0.01)
    return made[-1]


async def _calls(client: Client, list_too: bool) -> None:
    result = await client.call_tool("get_person", {"id": 1})
    assert not result.is_error, result
    assert result.structured_content is not None and result.structured_content["name"] == "Ann"
    if list_too:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "get_person" in names and "search_people" in names


async def _cycle(project: Project, made: list[Any], http: bool, mode: str, list_too: bool) -> None:
    """One start, one or two MCP calls, one stop: what one `dbt-mxcp serve` process does."""
    live = LiveProject(Flags(project_dir=str(project.path), profiles_dir=str(project.path)), lock_wait=10.0)
    try:
        live.start()
        adapter = McpAdapter(live)
        with anyio.fail_after(CYCLE_TIMEOUT):
            if not http:
                async with Client(adapter.server, mode=mode) as client:  # type: ignore[arg-type]
                    await _calls(client, list_too)
                return
            port = free_port()
            made.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(transports.serve_http, adapter, live, host="127.0.0.1", port=port,
                                      stateless=False, interval=0.2))
                server = await _started(made)
                try:
                    async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:  # type: ignore[arg-type]
                        await _calls(client, list_too)
                finally:
                    server.should_exit = True  # what the SIGTERM handler does after draining
            assert adapter.in_flight == 0
    finally:
        live.close()


def test_start_stop_cycles_leak_no_fds_or_threads(it_project: Project, scale: Scale, clean_env: None,
                                                   uvicorn_servers: list[Any]) -> None:
    cycles = scale.pick(200, 500)
    every = scale.pick(4, 2)  # an HTTP cycle every `every` cycles, the others in memory
    counts = {"http": 0, "memory": 0}

    def one(n: int) -> None:
        http = n % every == 0
        counts["http" if http else "memory"] += 1
        # Both protocol eras: the 2025-11-25 session handshake, and 2026-07-28 (auto picks it).
        mode = "legacy" if (n // every) % 2 else "auto"
        anyio.run(_cycle, it_project, uvicorn_servers, http, mode, n % 10 in (0, 1))

    one(0)  # warm-up, one cycle of each kind: imports, DuckDB's and the SDK's process-wide state
    one(1)
    baseline = _settled({"fds": _fds(), "threads": _threads(), "os_threads": _os_threads()})
    started = time.monotonic()
    for n in range(2, cycles):
        one(n)
    elapsed = time.monotonic() - started
    after = _settled(baseline)
    done = f"{cycles - 2} cycles ({counts['http'] - 1} over HTTP) in {elapsed:.1f} s"

    new_fds = {fd: target for fd, target in after["fds"].items() if baseline["fds"].get(fd) != target}
    assert len(after["fds"]) <= len(baseline["fds"]) + SLACK_FDS, (
        f"{len(after['fds']) - len(baseline['fds'])} more open file descriptors after {done}: "
        f"{sorted(new_fds.items())[:20]}")
    assert len(after["threads"]) <= len(baseline["threads"]) + SLACK_THREADS, (
        f"threads before: {baseline['threads']}\nthreads after {done}: {after['threads']}")
    assert after["os_threads"] <= baseline["os_threads"] + SLACK_THREADS, (
        f"{after['os_threads'] - baseline['os_threads']} more OS threads (DuckDB's native threads count too) "
        f"after {done}")
