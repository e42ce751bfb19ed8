"""The DuckDB audit sink with real servers and the real CLI: records chained in a DuckDB file, read by
`dbt-mxcp log` while a server writes it, tampering found, a second writer refused with a clear
error, fail-closed when the file cannot be written, sensitive arguments HMAC'd, crashes survived."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
import yaml
from mcp import Client

from tests.helpers import Project, free_port, run
from tests.integration.test_server import http_server, http_server_process

CANARY = "zq-canary-8d2b"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _configure(project: Project, **audit: Any) -> None:
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"audit": {"sink": "duckdb", **audit}}))


def _log(project: Project, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(project.mxcp("log", "--output", "json", *args).stdout))


def _verified_count(project: Project) -> int:
    """`dbt-mxcp log --verify` must pass; the number of records it checked."""
    out = project.mxcp("log", "--verify").stdout
    m = re.search(r": (\d+) records, hash chain intact", out)
    assert m, out
    return int(m.group(1))


def _rows(db: Path) -> list[tuple[int, datetime, str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [tuple(r) for r in con.execute("select id, time, hash, line from mxcp_audit order by id").fetchall()]


def _sha256_of(record: dict[str, Any]) -> str:
    """The chain hash, computed here from the documented rule (canonical JSON without `hash`)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _refused(proc: Any, db: Path) -> None:
    """A process refused because another one writes `db`: a clear message, exit 2, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(db) in proc.stderr and "audit.sink: postgres" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr


@pytest.mark.anyio
async def test_calls_are_chained_private_hmac_only_and_readable_while_served(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    _configure(project)  # the default path: <log-path>/mxcp_audit.duckdb
    db = project.path / "logs" / "mxcp_audit.duckdb"
    wal = db.with_name(db.name + ".wal")
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 1})).is_error
            assert (await c.call_tool("salary_band", {"band_min": 0})).is_error
            assert not (await c.call_tool("search_people", {"name_query": CANARY})).is_error  # sensitive
            assert not (await c.call_tool("search_people", {"name_query": CANARY, "limit": 2})).is_error

            # The server holds the file read-write; log and --verify read it all the same.
            records = _log(project)
            assert [(r["endpoint"]["name"], r["status"]) for r in records] == [
                ("get_person", "ok"), ("salary_band", "denied"), ("search_people", "ok"), ("search_people", "ok")]
            assert _verified_count(project) == 4
            assert _mode(db) == 0o600 and _mode(wal) == 0o600  # the WAL holds the records too
            wal_bytes = wal.read_bytes()
            assert b"search_people" in wal_bytes and CANARY.encode() not in wal_bytes

            assert not (await c.call_tool("get_person", {"id": 2})).is_error  # reading did not disturb the writer
            assert len(_log(project, "--endpoint", "get_person")) == 2

    rows = _rows(db)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    lines = [json.loads(r[3]) for r in rows]
    assert lines[:4] == records
    assert lines[0]["prev_hash"] == ""
    for (_, time, hash_, _), record, previous in zip(rows, lines, [None, *lines], strict=False):
        assert hash_ == record["hash"] == _sha256_of(record)
        assert previous is None or record["prev_hash"] == previous["hash"]
        assert time == datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    key = (project.path / "logs" / "mxcp_audit.key").read_bytes().strip()  # the key beside the file
    expected = "hmac-sha256:" + hmac.new(key, json.dumps(CANARY).encode(), hashlib.sha256).hexdigest()
    assert lines[2]["arguments"]["name_query"] == lines[3]["arguments"]["name_query"] == expected
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from mxcp_audit where line like ?", [f"%{CANARY}%"]).fetchone() == (0,)
    assert _verified_count(project) == 5


@pytest.mark.anyio
async def test_log_verifies_under_load_and_after_sigkill_and_the_next_server_continues(
        fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    _configure(project, path="audit/calls.duckdb")  # relative to the project; the key goes beside it
    acknowledged = 0
    counts: list[int] = []
    with http_server_process(project) as (base, proc):

        async def caller() -> None:
            nonlocal acknowledged
            async with Client(f"{base}/mcp", mode="auto") as c:  # type: ignore[arg-type]
                while True:
                    result = await c.call_tool("get_person", {"id": 2})
                    acknowledged += not result.is_error  # after the await: `+=` around it would lose counts

        with pytest.raises(BaseException):  # noqa: B017 - the clients die with the server
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(caller)
                await anyio.sleep(1)
                for _ in range(3):  # while the calls flow
                    counts.append(await anyio.to_thread.run_sync(_verified_count, project))
                proc.send_signal(signal.SIGKILL)
                await anyio.sleep(2)
                tg.cancel_scope.cancel()
    assert counts[0] > 0 and counts == sorted(counts) and counts[-1] > counts[0]
    assert acknowledged > counts[-1]
    ok = [r for r in _log(project) if r["status"] == "ok"]
    assert len(ok) >= acknowledged  # every answered call has its record (committed before the answer)
    assert (project.path / "audit" / "mxcp_audit.key").is_file()

    with http_server(project) as base:  # the killed server's lock died with it
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 3})).is_error
    after = _log(project)
    assert len(after) == len(ok) + 1 and after[-1]["arguments"] == {"id": 3}
    assert after[-1]["prev_hash"] == after[-2]["hash"]
    assert _verified_count(project) == len(after)


@pytest.mark.anyio
async def test_a_second_writer_is_refused_with_a_clear_error(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    _configure(project)
    db = project.path / "logs" / "mxcp_audit.duckdb"
    with http_server(project) as base:
        second = run(["dbt-mxcp", "serve", "--transport", "http", "--port", str(free_port()), "--project-dir",
                      str(project.path), "--profiles-dir", str(project.path)], project.path, check=False, timeout=60)
        _refused(second, db)
        one_shot = project.mxcp("run", "tool", "get_person", "--param", "id=1", check=False)
        _refused(one_shot, db)
        assert "Ann" not in one_shot.stdout  # not answered: its record could not have been written
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 2})).is_error  # the first server is unaffected
    assert [r["transport"] for r in _log(project)] == ["http"]


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_a_tampered_row_fails_verify(fresh_it_project: Project, tamper: str) -> None:
    project = fresh_it_project
    project.dbt("build")
    _configure(project)
    db = project.path / "logs" / "mxcp_audit.duckdb"
    for person in (1, 2, 3):
        assert project.call("tool", "get_person", f"id={person}")["id"] == person
    assert _verified_count(project) == 3
    with duckdb.connect(str(db)) as con:
        if tamper == "edit":
            changed = con.execute("""update mxcp_audit set line = replace(line, '"status":"ok"', '"status":"denied"')
                                     where id = 2 returning id""").fetchall()
        else:
            changed = con.execute("delete from mxcp_audit where id = 2 returning id").fetchall()
    assert changed == [(2,)]
    verified = project.mxcp("log", "--verify", check=False)
    assert verified.returncode == 1
    expected = ("mxcp_audit:2: its content does not match its hash (edited)" if tamper == "edit"
                else "mxcp_audit:3: does not follow the previous record")
    assert expected in verified.stdout and "hash chain intact" not in verified.stdout


@pytest.mark.anyio
async def test_a_torn_wal_tail_is_dropped_and_the_chain_continues(fresh_it_project: Project) -> None:
    project = fresh_it_project
    project.dbt("build")
    _configure(project)
    db = project.path / "logs" / "mxcp_audit.duckdb"
    wal = db.with_name(db.name + ".wal")
    with http_server_process(project) as (base, proc):
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            for person in (1, 2, 3):
                assert not (await c.call_tool("get_person", {"id": person})).is_error
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert wal.stat().st_size > 0  # killed before any checkpoint: the records are in the WAL
    records = _log(project)
    assert [r["arguments"] for r in records] == [{"id": 1}, {"id": 2}, {"id": 3}]
    with wal.open("r+b") as fh:  # a machine crash in the middle of the last commit (never acknowledged)
        fh.truncate(wal.stat().st_size - 10)
    assert _log(project) == records[:2]
    assert _verified_count(project) == 2
    with http_server(project) as base:
        async with Client(f"{base}/mcp", mode="legacy") as c:  # type: ignore[arg-type]
            assert not (await c.call_tool("get_person", {"id": 4})).is_error
    after = _log(project)
    assert [r["arguments"] for r in after] == [{"id": 1}, {"id": 2}, {"id": 4}]
    assert after[2]["prev_hash"] == records[1]["hash"]
    assert _verified_count(project) == 3
