"""Soak: MCP clients over HTTP (and one over stdio) calling a mix of tools, resources and prompts for a
bounded time (`--long`: minutes), thinking between calls and reconnecting every few calls, every answer
checked against the seeds. Reports latency, error rate and the server's memory growth (pytest -s shows
them; they are also recorded as junit properties)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from tests.helpers import Project
from tests.reliability.conftest import Scale
from tests.reliability.helpers import (
    Connect,
    Oracle,
    acknowledged,
    all_answers,
    audit_records,
    clients,
    http_connect,
    missing_from_log,
    percentile,
    serving,
    stdio_connect,
    until,
)

pytestmark = pytest.mark.anyio
RSS_GROWTH_LIMIT_MB = 50  # generous: growth is reported, not a target


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_soak_many_clients_with_reconnects(it_project: Project, scale: Scale, tmp_path: Path,
                                                 record_property: Any) -> None:
    duration = scale.pick(20.0, 300.0)
    n_http = scale.pick(6, 16)
    seed = int(os.environ.get("DBT_MXCP_SOAK_SEED", str(time.time_ns() % 100_000)))
    oracle = Oracle()
    # The stdio servers keep their own audit log: two processes appending to one file would fork its chain.
    settings = tmp_path / "mxcp.yml"
    settings.write_text(yaml.safe_dump({"audit": {"path": str(tmp_path / "stdio_audit.jsonl")}}))
    stdio_env = {"DBT_MXCP_SETTINGS": str(settings)}
    with serving(it_project) as server:
        idle = server.rss_kb()
        connects: list[Connect | tuple[Connect, dict[str, Any]]] = [http_connect(lambda: server.url)] * n_http
        # A stdio session is a server process of its own: reconnect it less often.
        connects.append((stdio_connect(it_project, stdio_env), {"per_session": (15, 30)}))
        started = time.monotonic()
        async with clients(connects, oracle.draw, seed=seed) as tallies:
            # Memory at the start: once warm (each client served a few calls, each code path taken).
            await until(lambda: all(len(t.answers) >= 5 for t in tallies), "the first calls of every client")
            rss = [server.rss_kb()]
            while (left := duration - (time.monotonic() - started)) > 0:
                await anyio.sleep(min(1.0, left))  # the soak's clock; memory is sampled each second
                rss.append(server.rss_kb())
        elapsed = time.monotonic() - started
        rss.append(server.rss_kb())
        status, ready = await server.ready()
        server_log = server.log()

    answers = all_answers(tallies)
    failed = [a for a in answers if not a.correct and not a.answered]
    wrong = [a for a in answers if a.wrong]
    session_failures = [f for t in tallies for f in t.session_failures]
    latencies = [a.latency * 1000 for a in answers]
    http = [a.latency * 1000 for a in answers if a.session != "stdio"]
    stdio = [a.latency * 1000 for a in answers if a.session == "stdio"]
    # VmRSS swings with the calls in flight: start and end are each the median of three samples a second apart.
    start_kb, end_kb = statistics.median(rss[:3]), statistics.median(rss[-3:])
    growth_mb = (end_kb - start_kb) / 1024
    figures = {
        "soak_seconds": round(elapsed, 1), "soak_clients": f"{n_http} http + 1 stdio", "soak_seed": seed,
        "soak_calls": len(answers), "soak_calls_per_s": round(len(answers) / elapsed, 1),
        "soak_sessions": sum(t.sessions for t in tallies),
        "soak_p50_ms": round(percentile(latencies, 50), 1), "soak_p99_ms": round(percentile(latencies, 99), 1),
        "soak_max_ms": round(max(latencies), 1),
        "soak_http_p50_ms": round(percentile(http, 50), 1), "soak_http_p99_ms": round(percentile(http, 99), 1),
        "soak_stdio_p50_ms": round(percentile(stdio, 50), 1) if stdio else None,
        "soak_stdio_p99_ms": round(percentile(stdio, 99), 1) if stdio else None,
        "soak_error_rate": round((len(failed) + len(wrong) + len(session_failures)) / max(1, len(answers)), 6),
        "soak_errors": len(failed) + len(session_failures), "soak_wrong_answers": len(wrong),
        "soak_rss_idle_mb": round(idle / 1024, 1), "soak_rss_start_mb": round(start_kb / 1024, 1),
        "soak_rss_peak_mb": round(max(rss) / 1024, 1),
        "soak_rss_end_mb": round(end_kb / 1024, 1), "soak_rss_growth_mb": round(growth_mb, 1),
    }
    print("\nsoak: " + ", ".join(f"{k.removeprefix('soak_')}={v}" for k, v in figures.items()))
    for name, value in figures.items():
        record_property(name, value)

    assert not wrong, f"{len(wrong)} wrong answer(s), e.g. " + "; ".join(a.describe() for a in wrong[:3])
    assert not failed, f"{len(failed)} failed call(s), e.g. " + "; ".join(a.describe() for a in failed[:3])
    assert not session_failures, f"sessions that failed: {session_failures[:3]}\n{server_log}"
    for tally in tallies[:n_http]:
        assert len(tally.answers) >= 10 and tally.sessions >= 2, (tally.name, len(tally.answers), tally.sessions)
    assert len(tallies[-1].answers) >= 5, "the stdio client hardly called"
    kinds = {a.call.kind for a in answers} | {a.call.name for a in answers if a.call.error}
    assert {"tool", "resource", "prompt", "salary_band"} <= kinds  # the mix was exercised, failures included
    assert status == 200 and ready["status"] == "ready", ready
    assert growth_mb < RSS_GROWTH_LIMIT_MB, f"server RSS grew {growth_mb:.1f} MB over the soak"

    # Every answered call has its record: the HTTP server's in the project's log, the stdio servers' in theirs.
    http_missing = missing_from_log(acknowledged([a for a in answers if a.session != "stdio"]),
                                    audit_records(it_project))
    assert not http_missing, f"{len(http_missing)} answered call(s) without a record: {http_missing[:5]}"
    stdio_records = json.loads(it_project.mxcp("log", "--output", "json", extra_env=stdio_env).stdout)
    stdio_missing = missing_from_log(acknowledged([a for a in answers if a.session == "stdio"]), stdio_records)
    assert not stdio_missing, f"{len(stdio_missing)} answered call(s) without a record: {stdio_missing[:5]}"
    verified = it_project.mxcp("log", "--verify", extra_env=stdio_env).stdout
    assert f"{len(stdio_records)} records, hash chain intact" in verified, verified
