"""Faults under load: several MCP clients keep calling (every answer checked against the seeds) while
the server is SIGKILLed and restarted, its audit log becomes unwritable, dbt rebuilds and re-parses the
project, and a truncated manifest.json appears."""

from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import pytest
import yaml
from mcp import Client

from tests.helpers import Project, run
from tests.reliability.conftest import Scale
from tests.reliability.helpers import (
    AUDIT_ERROR,
    Answer,
    Call,
    Oracle,
    Server,
    Tally,
    acknowledged,
    all_answers,
    audit_records,
    clients,
    http_connect,
    missing_from_log,
    serving,
    start_server,
    until,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("DBT_MXCP_FAULTS_SEED", str(time.time_ns() % 100_000)))
    print(f"\nseed {value} (DBT_MXCP_FAULTS_SEED={value} draws the same mix of calls again)")
    return value


def _each(tallies: Sequence[Tally], n: int, since: float = 0.0) -> Callable[[], bool]:
    """A condition: every client has had at least `n` answers to calls it started after `since`."""
    return lambda: all(t.count_since(since) >= n for t in tallies)


def _problems(answers: Sequence[Answer], tallies: Sequence[Tally]) -> str:
    """Failed calls, wrong answers and failed sessions, described (empty when there are none)."""
    failed = [a for a in answers if not a.correct]
    sessions = [f for t in tallies for f in t.session_failures]
    if not failed and not sessions:
        return ""
    return (f"{len(failed)} of {len(answers)} calls failed or were answered wrongly, e.g.\n  "
            + "\n  ".join(a.describe() for a in failed[:5]) + f"\nsessions that failed: {sessions[:3]}")


def _verify(project: Project) -> str:
    """`dbt-mxcp log --verify`, which must exit 0; its output."""
    checked = project.mxcp("log", "--verify", check=False)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0 and "hash chain intact" in output, output
    return output


# -- 1. SIGKILL under load, then a restart ---------------------------------------------------------


async def test_sigkill_under_load_then_restart_loses_no_acknowledged_record(
        fresh_it_project: Project, scale: Scale, seed: int) -> None:
    project = fresh_it_project
    project.dbt("build")
    wait = scale.pick(60.0, 900.0)  # seconds the clients get to make the calls a step waits for
    oracle = Oracle()
    n = scale.pick(4, 8)
    before, after = scale.pick(40, 400), scale.pick(25, 250)  # answers per client before the kill and after
    draw = partial(oracle.draw, audited_only=True)
    servers: list[Server] = [start_server(project)]
    try:
        async with clients([http_connect(lambda: servers[-1].url)] * n, draw, seed=seed) as tallies:
            await until(_each(tallies, before), "load before the kill", timeout=wait)
            servers[0].kill()
            servers.append(await anyio.to_thread.run_sync(start_server, project))  # the clients keep trying
            restarted = servers[1].url
            await until(lambda: all(sum(a.session == restarted for a in t.answers) >= after for t in tallies),
                        "load on the restarted server", timeout=wait)
    finally:
        for server in servers:
            server.stop()  # the second one by SIGTERM: in-flight calls finish, the log is flushed

    answers = all_answers(tallies)
    old, new = servers[0].url, servers[1].url
    wrong = [a for a in answers if a.wrong]
    assert not wrong, "wrong answers: " + "; ".join(a.describe() for a in wrong[:3])
    # Calls on the killed server may be lost (no answer); calls on the restarted one may not fail at all.
    on_new = [a for a in answers if a.session == new]
    assert _problems(on_new, []) == "", _problems(on_new, [])
    cut_off = [a for a in answers if a.session == old and not a.correct and not a.lost]
    assert not cut_off, "; ".join(a.describe() for a in cut_off[:3])
    failed_sessions = [f for t in tallies for f in t.session_failures if not f.startswith(old)]
    assert not failed_sessions, failed_sessions
    answered_old = sum(a.answered for a in answers if a.session == old)
    assert answered_old >= n * before // 2, answered_old

    # Every call answered with a result has its own record, the killed server's included.
    verified = _verify(project)
    print(f"answered: {answered_old} before the kill, {sum(a.answered for a in on_new)} after; {verified.strip()}")
    records = audit_records(project)
    missing = missing_from_log(acknowledged(answers), records)
    assert not missing, f"{len(missing)} acknowledged call(s) without a record: {missing[:5]}"
    assert {r["transport"] for r in records} == {"http"}


# -- 2. The audit log becomes unwritable, then writable again ----------------------------------------

AT_FDCWD, RENAME_EXCHANGE = -100, 2


def _exchange(a: os.PathLike[str], b: os.PathLike[str]) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): no moment without either."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(a))


async def test_unwritable_audit_log_under_load_fails_closed_then_recovers(
        fresh_it_project: Project, scale: Scale, seed: int) -> None:
    project = fresh_it_project
    project.dbt("build")
    wait = scale.pick(60.0, 900.0)  # seconds the clients get to make the calls a step waits for
    oracle = Oracle()
    names = [p.name for p in oracle.people]
    n = scale.pick(3, 6)
    per_phase = scale.pick(10, 100)  # answers per client in each phase
    log = project.path / "logs" / "mxcp_audit.jsonl"

    with serving(project) as server:
        async with clients([http_connect(lambda: server.url)] * n, partial(oracle.draw, audited_only=True),
                           seed=seed) as tallies:

            async def fails_closed(fault: str, since: float, cause: str) -> None:
                await until(_each(tallies, per_phase, since), f"calls while {fault}", timeout=wait)
                answered = [a for a in all_answers(tallies) if a.started >= since and a.answered]
                assert not answered, f"{len(answered)} call(s) answered while {fault}, e.g. {answered[0].describe()}"

                async def reported() -> bool:
                    status, body = await server.ready()
                    return status == 503 and body["status"] == "audit_failing"

                await until(reported, f"/readyz to report audit_failing while {fault}", timeout=20)
                _, body = await server.ready()
                assert cause in (body["audit_error"] or ""), body  # the operator is told why

            async def recovered(fault: str, since: float) -> None:
                await until(_each(tallies, per_phase, since), f"calls after {fault} was repaired", timeout=wait)

                async def ready() -> bool:
                    return (await server.ready())[0] == 200

                await until(ready, f"/readyz to be ready again after {fault}", timeout=20)

            windows: list[tuple[str, float, float]] = []  # (fault, when it began, when it was repaired)
            await until(_each(tallies, per_phase), "calls before the faults", timeout=wait)

            # A full disk (as root, too): writes past the file's current size fail with EFBIG.
            soft, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (log.stat().st_size, hard))
            began = time.monotonic()
            await fails_closed("the disk is full", began, "File too large")
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (soft, hard))
            windows.append(("the disk is full", began, time.monotonic()))
            await recovered("the full disk", windows[-1][2])

            # The log file is replaced by a directory (set aside, atomically, and put back later).
            aside = log.with_name("set_aside")
            aside.mkdir()
            _exchange(log, aside)
            began = time.monotonic()
            await fails_closed("the log's path is a directory", began, "directory")
            _exchange(log, aside)
            windows.append(("the log's path is a directory", began, time.monotonic()))
            aside.rmdir()
            await recovered("the replaced log", windows[-1][2])

    answers = all_answers(tallies)
    for fault, began, repaired in windows:
        during = [a for a in answers if a.started >= began and a.ended <= repaired]
        answered = [a for a in during if a.answered]
        assert not answered, f"answered while {fault}: " + "; ".join(a.describe() for a in answered[:3])
        unclear = [a for a in during if AUDIT_ERROR not in (a.error or "") or a.data is not None
                   or any(name in (a.error or "") for name in names)]
        assert not unclear, f"not a clean audit error while {fault}: " + "; ".join(a.describe() for a in unclear[:3])
    refused = [a for a in answers if AUDIT_ERROR in (a.error or "")]
    outside = [a for a in answers if not any(a.started <= repaired and a.ended >= began
                                             for _, began, repaired in windows)]
    assert _problems(outside, tallies) == "", _problems(outside, tallies)  # healthy phases: every call right
    assert not [a for a in answers if a.lost]

    # The log holds exactly the calls whose record could be written, chained across both faults.
    verified = _verify(project)
    assert "torn" not in verified, verified  # nothing crashed: no partial line may be left
    records = audit_records(project)
    assert len(records) == len(answers) - len(refused), (len(records), len(answers), len(refused))
    missing = missing_from_log(acknowledged(answers), records)
    assert not missing, f"{len(missing)} acknowledged call(s) without a record: {missing[:5]}"
    print(f"{len(answers)} calls, {len(refused)} refused while the log could not be written; {verified.strip()}")


# -- 3. dbt run, then a schema.yml edit and dbt parse ------------------------------------------------


def _edit_properties(project: Project) -> None:
    """people_joined_since lists the newest first; a new tool, people_on_floor."""
    path = project.path / "models" / "properties.yml"
    doc = yaml.safe_load(path.read_text())
    model = next(m for m in doc["models"] if m["name"] == "people_enriched")
    tools = model["config"]["meta"]["mxcp"]["tools"]
    since = next(t for t in tools if t["name"] == "people_joined_since")
    assert "order by joined, id" in since["source"]["code"]
    since["source"]["code"] = since["source"]["code"].replace("order by joined, id", "order by joined desc, id desc")
    tools.append({"name": "people_on_floor", "description": "Everyone whose team sits on one floor.",
                  "parameters": [{"name": "floor", "type": "integer", "description": "Floor number."}],
                  "return": {"type": "array"}})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def test_dbt_run_and_schema_edit_under_load(fresh_it_project: Project, scale: Scale, seed: int) -> None:
    project = fresh_it_project
    project.dbt("build")
    wait = scale.pick(60.0, 900.0)  # seconds the clients get to make the calls a step waits for
    oracle = Oracle()
    n = scale.pick(4, 8)
    per_phase = scale.pick(5, 50)
    served_edit = {"at": float("inf")}

    def on_floor(rng: random.Random) -> Call:
        floor = rng.randint(0, 5)
        rows = [oracle.enriched(p, email=True) for p in oracle.people if oracle.floors[p.team] == floor]
        return Call("tool", "people_on_floor", {"floor": floor}, {"result": rows}, unordered=True)

    def draw(rng: random.Random) -> Call:
        if time.monotonic() > served_edit["at"] and rng.random() < 0.15:
            return on_floor(rng)
        call = oracle.draw(rng)
        if call.name == "people_joined_since":  # before the edit is served, either order is right
            newest_first = oracle.joined_since(date.fromisoformat(call.arguments["since"]), descending=True)
            call = replace(call, alternatives=(newest_first,))
        return call

    def dbt(*args: str) -> Any:
        return run(["dbt", *args, "--profiles-dir", "."], project.path, check=False)

    with serving(project) as server:
        async with clients([http_connect(lambda: server.url)] * n, draw, seed=seed) as tallies, \
                Client(server.url, mode="legacy") as control:
            await until(_each(tallies, per_phase), "calls before dbt run", timeout=wait)
            generation = (await server.ready())[1]["generation"]
            built = await anyio.to_thread.run_sync(dbt, "run")  # a plain dbt run, unaware of the server
            assert built.returncode == 0, built.stdout

            async def rebuilt() -> bool:
                _, body = await server.ready()
                return bool(body["generation"] > generation and body["reload_error"] is None)

            await until(rebuilt, "the rebuilt warehouse to be served")
            after_run = time.monotonic()
            await until(_each(tallies, per_phase, after_run), "calls after dbt run", timeout=wait)

            _edit_properties(project)
            parsed = await anyio.to_thread.run_sync(dbt, "parse")
            assert parsed.returncode == 0, parsed.stdout

            async def listed() -> bool:
                return "people_on_floor" in {t.name for t in (await control.list_tools()).tools}

            await until(listed, "the new tool to be listed")
            served_edit["at"] = time.monotonic()
            newest = await control.call_tool("people_joined_since", {"since": "2021-01-01"})
            assert newest.structured_content == oracle.joined_since(date(2021, 1, 1), descending=True)
            await until(_each(tallies, per_phase, served_edit["at"]), "calls after the edit was served", timeout=wait)

    answers = all_answers(tallies)
    assert _problems(answers, tallies) == "", _problems(answers, tallies)
    # Once the edit is served, every call sees it: the registry is swapped whole, never in part.
    stale = [a for a in answers if a.call.name == "people_joined_since" and a.started > served_edit["at"]
             and a.data != a.call.alternatives[0]]
    assert not stale, "old answers after the edit was served: " + "; ".join(a.describe() for a in stale[:3])
    assert any(a.call.name == "people_on_floor" for a in answers)


# -- 4. A truncated manifest.json, then a good one ------------------------------------------------------


async def test_truncated_manifest_under_load_keeps_the_registry(fresh_it_project: Project, scale: Scale,
                                                                seed: int) -> None:
    project = fresh_it_project
    project.dbt("build")
    wait = scale.pick(60.0, 900.0)  # seconds the clients get to make the calls a step waits for
    oracle = Oracle()
    n = scale.pick(4, 8)
    per_phase = scale.pick(8, 80)
    manifest = project.path / "target" / "manifest.json"
    good = manifest.read_text()
    description = "How many people a team has, counted by the new manifest."

    with serving(project) as server:
        async with clients([http_connect(lambda: server.url)] * n, oracle.draw, seed=seed) as tallies, \
                Client(server.url, mode="legacy") as control:
            await until(_each(tallies, per_phase), "calls before the manifest is truncated", timeout=wait)
            generation = (await server.ready())[1]["generation"]
            manifest.write_text(good[: len(good) // 2])  # as a write cut short leaves it

            async def rejected() -> bool:
                return bool((await server.ready())[1]["reload_error"])

            await until(rejected, "the truncated manifest to be rejected")
            truncated_at = time.monotonic()
            await until(_each(tallies, per_phase, truncated_at), "calls after the manifest was truncated", timeout=wait)
            status, body = await server.ready()
            assert status == 200 and body["generation"] == generation, body  # still serving the old registry
            assert "not valid JSON" in body["reload_error"], body

            doc = json.loads(good)
            node = doc["nodes"]["model.dbt_mxcp_integration_tests.team_stats"]
            for meta in (node["config"]["meta"], node.get("meta") or {}):
                for tool in meta.get("mxcp", {}).get("tools", []):
                    if tool["name"] == "count_people":
                        tool["description"] = description
            staged = manifest.with_name("manifest.json.new")
            staged.write_text(json.dumps(doc))
            os.replace(staged, manifest)  # whole, at once

            async def picked_up() -> bool:
                _, body = await server.ready()
                return bool(body["generation"] > generation and body["reload_error"] is None)

            await until(picked_up, "the good manifest to be loaded")
            tools = {t.name: t for t in (await control.list_tools()).tools}
            assert tools["count_people"].description == description
            loaded_at = time.monotonic()
            await until(_each(tallies, per_phase, loaded_at), "calls after the good manifest was loaded", timeout=wait)

    answers = all_answers(tallies)
    assert _problems(answers, tallies) == "", _problems(answers, tallies)
    assert sum(a.started >= truncated_at for a in answers) >= n * per_phase
