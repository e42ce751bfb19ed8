"""Shared pieces of the reliability suite.

- `Oracle`: the answers of integration_tests/ endpoints, computed from seeds/*.csv with Python's `csv`
  module (never from dbt_mxcp), and `Oracle.draw` to pick a random call from a mix of tools,
  resources and prompts, some of which must fail.
- `Server`: `dbt-mxcp serve --transport http` with its output drained by a thread (a server that logs
  a lot never blocks on a full pipe) and its PID at hand for signals, /proc and prlimit.
- `client_loop` / `clients`: callers that think between calls, reconnect every few calls, and check
  and time every answer; a `Tally` per caller.
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import math
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from tests.helpers import BIN, REPO, Project, env, free_port

SEEDS = REPO / "integration_tests" / "seeds"
AUDIT_ERROR = "audit record could not be written"  # what a call refused by strict audit says
PROMPT_SYSTEM = "You are an HR analyst. Use the team_overview and count_people tools."
Mode = Literal["legacy", "auto"]
MODES: tuple[Mode, ...] = ("legacy", "auto")  # the 2025-11-25 handshake; 2026-07-28 stateless


# -- the oracle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    email: str | None
    team: str
    salary: Decimal
    joined: date
    active: bool


@dataclass(frozen=True)
class Call:
    """One call and the answer it must get."""

    kind: Literal["tool", "resource", "prompt"]
    name: str  # the tool or prompt, or the resource's URI
    arguments: dict[str, Any]  # for a resource: its URI variables, as the audit log records them
    expected: Any = None  # structuredContent, the resource's JSON, or the prompt's message texts
    error: str | None = None  # the call must fail with this in its message
    endpoint: str | None = None  # its name in the audit log; None: not matched against the log
    unordered: bool = False  # the endpoint does not order its rows: compare them as a multiset
    alternatives: tuple[Any, ...] = ()  # other answers that are right too (e.g. before/after a reload)

    def audit_key(self) -> tuple[str, str] | None:
        """(endpoint, arguments) as the audit log holds them, when every argument is sent and none is sensitive."""
        return None if self.endpoint is None else (self.endpoint, canonical(self.arguments))


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sorted_rows(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("result"), list):
        return {**value, "result": sorted(value["result"], key=canonical)}
    if isinstance(value, list):
        return sorted(value, key=canonical)
    return value


class Oracle:
    """Expected answers of the integration_tests endpoints, from the seeds alone."""

    def __init__(self) -> None:
        with (SEEDS / "people.csv").open() as fh:
            self.people = [Person(int(r["id"]), r["name"], r["email"] or None, r["team"], Decimal(r["salary"]),
                                  date.fromisoformat(r["joined"]), r["active"] == "true")
                           for r in csv.DictReader(fh)]
        with (SEEDS / "teams.csv").open() as fh:
            self.floors = {r["team"]: int(r["floor"]) for r in csv.DictReader(fh)}
        self.teams = list(self.floors)
        self.by_id = {p.id: p for p in self.people}
        self._days = itertools.count()  # makes every people_joined_since call of a run unique

    # rows as the endpoints return them (decimals as JSON numbers, dates as YYYY-MM-DD)

    def enriched(self, p: Person, *, email: bool = False) -> dict[str, Any]:
        row = {"id": p.id, "name": p.name, "team": p.team, "floor": self.floors.get(p.team),
               "salary": float(p.salary), "joined": p.joined.isoformat(), "joined_year": p.joined.year,
               "active": p.active}
        return {**row, "email": p.email} if email else row

    def team_stats(self, team: str) -> dict[str, Any]:
        members = [p for p in self.people if p.team == team]
        total = sum((p.salary for p in members), Decimal(0))
        avg = (total / len(members)).quantize(Decimal("0.01")) if members else None
        return {"team": team, "floor": self.floors[team], "headcount": len(members),
                "active_count": sum(p.active for p in members), "total_salary": float(total),
                "avg_salary": None if avg is None else float(avg)}

    def joined_since(self, since: date, *, descending: bool = False) -> dict[str, Any]:
        rows = sorted((p for p in self.people if p.joined >= since), key=lambda p: (p.joined, p.id),
                      reverse=descending)
        return {"result": [{"id": p.id, "name": p.name, "joined": p.joined.isoformat()} for p in rows]}

    def next_since(self) -> date:
        """A date no earlier call of this run used (so each such call is its own audit key)."""
        return date(2017, 6, 1) + timedelta(days=next(self._days))

    # the calls

    def joined_since_call(self, since: date) -> Call:
        return Call("tool", "people_joined_since", {"since": since.isoformat()}, self.joined_since(since),
                    endpoint="people_joined_since")

    def draw(self, rng: random.Random, *, audited_only: bool = False) -> Call:
        """A random call of the mix; `audited_only` leaves out calls that the audit log cannot be matched on."""
        makers: list[tuple[int, Callable[[random.Random], Call]]] = [
            (4, self._get_person), (3, self.joined_since_call_random), (2, self._count_people),
            (2, self._teams_on_floor), (1, self._get_team), (2, self._team_overview), (2, self._people_in_team),
            (2, self._greet_person), (1, self._team_summary), (2, self._person_resource), (1, self._teams_resource),
            (2, self._team_brief), (1, self._denied),
        ]
        if not audited_only:
            makers.append((3, self._search_people))
        weights = [w for w, _ in makers]
        return rng.choices([m for _, m in makers], weights)[0](rng)

    def joined_since_call_random(self, rng: random.Random) -> Call:
        return self.joined_since_call(self.next_since())

    def _get_person(self, rng: random.Random) -> Call:
        pid = rng.randint(1, len(self.people) + 4)  # some ids have nobody
        if pid in self.by_id:
            return Call("tool", "get_person", {"id": pid}, self.enriched(self.by_id[pid]), endpoint="get_person")
        return Call("tool", "get_person", {"id": pid}, error="no row found", endpoint="get_person")

    def _count_people(self, rng: random.Random) -> Call:
        team = rng.choice(self.teams)
        inactive = rng.random() < 0.5
        n = sum(1 for p in self.people if p.team == team and (inactive or p.active))
        return Call("tool", "count_people", {"team": team, "include_inactive": inactive}, {"result": n},
                    endpoint="count_people")

    def _teams_on_floor(self, rng: random.Random) -> Call:
        floor = rng.randint(0, max(self.floors.values()) + 1)
        rows = [self.team_stats(t) for t in self.teams if self.floors[t] == floor]
        return Call("tool", "teams_on_floor", {"floor": floor}, {"result": rows}, endpoint="teams_on_floor",
                    unordered=True)

    def _get_team(self, rng: random.Random) -> Call:
        team = rng.choice(self.teams)
        return Call("tool", "get_team", {"team": team}, {"team": team, "floor": self.floors[team]},
                    endpoint="get_team")

    def _team_overview(self, rng: random.Random) -> Call:
        teams = rng.sample(self.teams, rng.randint(1, 3))
        rows = []
        for team in sorted(teams):
            stats = self.team_stats(team)
            rows.append({"team": team, "floor": stats["floor"], "headcount": stats["headcount"],
                         "avg_salary": stats["avg_salary"],
                         "members": sorted(p.name for p in self.people if p.team == team)})
        return Call("tool", "team_overview", {"teams": teams}, {"result": rows}, endpoint="team_overview")

    def _people_in_team(self, rng: random.Random) -> Call:
        team = rng.choice(self.teams)
        rows = [{"id": p.id, "name": p.name, "team": p.team, "salary": float(p.salary)}
                for p in sorted(self.people, key=lambda p: p.id) if p.team == team]
        return Call("tool", "people_in_team", {"p_team": team}, {"result": rows}, endpoint="people_in_team")

    def _greet_person(self, rng: random.Random) -> Call:
        p = rng.choice(self.people)
        return Call("tool", "greet_person", {"id": p.id}, {"id": p.id, "greeting": f"hello, {p.name}!"},
                    endpoint="greet_person")

    def _team_summary(self, rng: random.Random) -> Call:
        team = rng.choice(self.teams)
        salaries = [p.salary for p in self.people if p.team == team]
        expected = {"team": team, "headcount": len(salaries),
                    "lowest": float(min(salaries)) if salaries else None,
                    "highest": float(max(salaries)) if salaries else None, "asked_by": "anonymous"}
        return Call("tool", "team_summary", {"team": team}, expected, endpoint="team_summary")

    def _search_people(self, rng: random.Random) -> Call:
        while True:
            call = self._search_people_once(rng)
            # search_people declares `email: {type: string}` (not nullable) and Kurt has no email, so a
            # result holding him is refused as not matching the declared return type: leave such calls out.
            if all(self.by_id[row["id"]].email is not None for row in call.expected["result"]):
                return call

    def _search_people_once(self, rng: random.Random) -> Call:
        name = rng.choice(self.people).name
        start = rng.randrange(len(name))
        query = name[start:start + rng.randint(1, 3)]
        query = query.upper() if rng.random() < 0.3 else query.lower()
        teams = rng.sample(self.teams, rng.randint(0, 2))
        active_only = rng.random() < 0.3
        min_salary = rng.choice([0, 4000, 4500.5, 5000])
        limit = rng.randint(1, 5)
        rows = [{"id": p.id, "name": p.name, "email": "****", "team": p.team, "salary": float(p.salary),
                 "joined": p.joined.isoformat(), "active": p.active}
                for p in sorted(self.people, key=lambda p: p.id)
                if query.lower() in p.name.lower() and (not teams or p.team in teams)
                and (p.active or not active_only) and p.salary >= Decimal(str(min_salary))][:limit]
        arguments = {"name_query": query, "teams": teams, "active_only": active_only, "min_salary": min_salary,
                     "limit": limit}
        return Call("tool", "search_people", arguments, {"result": rows})  # name_query is sensitive: no key

    def _person_resource(self, rng: random.Random) -> Call:
        pid = rng.randint(1, len(self.people) + 3)
        if pid not in self.by_id:
            return Call("resource", f"people://{pid}", {"id": pid}, error="not found", endpoint="people://{id}")
        p = self.by_id[pid]
        row = {"id": p.id, "name": p.name, "team": p.team, "salary": float(p.salary), "joined": p.joined.isoformat(),
               "active": p.active}
        return Call("resource", f"people://{pid}", {"id": pid}, row, endpoint="people://{id}")

    def _teams_resource(self, rng: random.Random) -> Call:
        rows = [{"team": t, "floor": f} for t, f in self.floors.items()]
        return Call("resource", "teams://all", {}, rows, endpoint="teams://all", unordered=True)

    def _team_brief(self, rng: random.Random) -> Call:
        team = rng.choice(self.teams)
        texts = [PROMPT_SYSTEM, f"Write a three-line brief on the {team} team: headcount, average salary, members."]
        return Call("prompt", "team_brief", {"team": team}, texts, endpoint="team_brief")

    def _denied(self, rng: random.Random) -> Call:
        return Call("tool", "salary_band", {"band_min": rng.randint(0, 5000)}, error="HR only", endpoint="salary_band")


# -- calling and checking --------------------------------------------------------------------------


@dataclass
class Answer:
    """What one call got, when."""

    call: Call
    session: str  # the server URL (or "stdio") of the session the call was made on
    started: float  # time.monotonic()
    ended: float
    answered: bool  # the server answered with a result, not an error
    error: str | None  # the isError text, the MCP error's message, or the exception
    data: Any  # structuredContent (also of an isError result), the resource's JSON, or the prompt's texts
    lost: bool = False  # no answer at all: the connection failed or the call timed out

    @property
    def correct(self) -> bool:
        call = self.call
        if call.error is not None:
            return not self.answered and self.error is not None and call.error in self.error
        if not self.answered:
            return False
        norm = _sorted_rows if call.unordered else (lambda v: v)
        return any(norm(self.data) == norm(want) for want in (call.expected, *call.alternatives))

    @property
    def wrong(self) -> bool:
        """Answered, with something other than the right answer (never acceptable)."""
        return self.answered and not self.correct

    @property
    def latency(self) -> float:
        return self.ended - self.started

    def describe(self) -> str:
        want = f"error {self.call.error!r}" if self.call.error else json.dumps(self.call.expected)[:300]
        got = f"error {self.error!r}" if not self.answered else json.dumps(self.data)[:300]
        return f"{self.call.kind} {self.call.name} {json.dumps(self.call.arguments)} on {self.session}: " \
               f"wanted {want}, got {got}"


def _text(content: Sequence[Any]) -> str:
    return "".join(str(getattr(c, "text", "")) for c in content)


async def perform(client: Client, call: Call, session: str, timeout: float = 30) -> Answer:
    """Make `call` and check its answer against the oracle (never raises for a failed call)."""
    started = time.monotonic()
    answered, error, data, lost = False, None, None, False
    try:
        with anyio.fail_after(timeout):
            if call.kind == "tool":
                result = await client.call_tool(call.name, call.arguments)
                data = result.structured_content
                if result.is_error:
                    error = _text(result.content)
                else:
                    answered = True
            elif call.kind == "resource":
                contents = (await client.read_resource(call.name)).contents
                data = json.loads(str(getattr(contents[0], "text", "")))
                answered = True
            else:
                prompt = await client.get_prompt(call.name, {k: str(v) for k, v in call.arguments.items()})
                data = [str(getattr(m.content, "text", "")).strip() for m in prompt.messages]
                answered = True
    except MCPError as exc:
        # The SDK resolves a request whose connection went away with a synthesized error.
        error, lost = exc.message, exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
    except Exception as exc:  # the connection went away, or no answer in time
        error, lost = f"{type(exc).__name__}: {exc}", True
    return Answer(call, session, started, time.monotonic(), answered, error, data, lost)


@dataclass
class Tally:
    """One caller's answers and sessions."""

    name: str
    answers: list[Answer] = field(default_factory=list)
    sessions: int = 0
    session_failures: list[str] = field(default_factory=list)  # sessions that could not be opened or closed

    def count_since(self, moment: float) -> int:
        return sum(1 for a in self.answers if a.started >= moment)


def acknowledged(answers: Sequence[Answer]) -> Counter[tuple[str, str]]:
    """Audit keys of the calls that were answered with a result."""
    return Counter(key for a in answers if a.answered and (key := a.call.audit_key()) is not None)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the value at rank ceil(p/100 * n) of the sorted values."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


Connect = Callable[[random.Random], tuple[AbstractAsyncContextManager[Client], str]]


def http_connect(url: Callable[[], str]) -> Connect:
    """Sessions to the server at `url()` (read at each reconnect), in a random protocol era."""
    def connect(rng: random.Random) -> tuple[AbstractAsyncContextManager[Client], str]:
        target = url()
        return Client(target, mode=rng.choice(MODES), read_timeout_seconds=30), target
    return connect


def stdio_connect(project: Project, extra_env: dict[str, str] | None = None) -> Connect:
    """Sessions with a `dbt-mxcp serve` (stdio) process of their own."""
    params = StdioServerParameters(command=str(BIN / "dbt-mxcp"), env=env(**(extra_env or {})),
                                   args=["serve", "--project-dir", str(project.path), "--profiles-dir",
                                         str(project.path)])

    def connect(rng: random.Random) -> tuple[AbstractAsyncContextManager[Client], str]:
        return Client(params, mode=rng.choice(MODES), read_timeout_seconds=30), "stdio"
    return connect


async def client_loop(connect: Connect, draw: Callable[[random.Random], Call], tally: Tally, stop: anyio.Event,
                      rng: random.Random, *, per_session: tuple[int, int] = (3, 8),
                      think: tuple[float, float] = (0.0, 0.05), call_timeout: float = 30,
                      session_timeout: float = 30) -> None:
    """Until `stop`: open a session, make a few calls with think time between them, close it, and again.

    Opening and closing a session each get `session_timeout` seconds; each call `call_timeout`."""
    while not stop.is_set():
        session, where = connect(rng)
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + session_timeout) as scope:
                async with session as client:
                    scope.deadline = math.inf  # opened: the calls have their own timeout
                    tally.sessions += 1
                    for _ in range(rng.randint(*per_session)):
                        answer = await perform(client, draw(rng), where, call_timeout)
                        tally.answers.append(answer)
                        if answer.lost or stop.is_set():
                            break  # a lost connection is not reused: open a new session
                        await anyio.sleep(rng.uniform(*think))
                    scope.deadline = anyio.current_time() + session_timeout
            if scope.cancelled_caught:
                tally.session_failures.append(f"{where}: session not opened or closed within {session_timeout:g} s")
        except Exception as exc:
            tally.session_failures.append(f"{where}: {type(exc).__name__}: {exc}")
            await anyio.sleep(0.05)  # a server that is down: try again shortly


@asynccontextmanager
async def clients(connects: Sequence[Connect | tuple[Connect, dict[str, Any]]], draw: Callable[[random.Random], Call],
                  *, seed: int, **options: Any) -> AsyncIterator[list[Tally]]:
    """Run one `client_loop` per entry of `connects` (a connect, or a connect and its own options) while the
    body runs; at its end, stop them after the call each is making."""
    tallies = [Tally(f"client-{i}") for i in range(len(connects))]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        for i, (entry, tally) in enumerate(zip(connects, tallies, strict=True)):
            connect, own = entry if isinstance(entry, tuple) else (entry, {})
            tg.start_soon(partial(client_loop, connect, draw, tally, stop, random.Random(seed * 1000 + i),
                                  **{**options, **own}))
        try:
            yield tallies
        finally:
            stop.set()


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 60,
                interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(interval)


def all_answers(tallies: Sequence[Tally]) -> list[Answer]:
    return [a for t in tallies for a in t.answers]


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Server:
    """A `dbt-mxcp serve --transport http` process that we started."""

    proc: subprocess.Popen[bytes]
    base: str
    output: list[str]
    drain: threading.Thread

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        """VmRSS of the server process, in kB (from /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for process {self.pid}")

    async def ready(self) -> tuple[int, dict[str, Any]]:
        """/readyz: its status code and body."""
        async with httpx2.AsyncClient() as http:
            resp = await http.get(f"{self.base}/readyz", timeout=10)
        return resp.status_code, resp.json()

    def log(self, lines: int = 60) -> str:
        return "".join(self.output[-lines:])

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (in-flight calls finish, the audit log is flushed), SIGKILL if it hangs; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)


def start_server(project: Project, *extra: str, timeout: float = 60) -> Server:
    """Start `dbt-mxcp serve --transport http` on a free port and wait until /healthz answers."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([str(BIN / "dbt-mxcp"), "serve", "--transport", "http", "--port", str(port),
                             "--project-dir", str(project.path), "--profiles-dir", str(project.path),
                             "--poll-interval", "0.2", *extra],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[str] = []

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            output.append(raw.decode("utf-8", "replace"))

    reader = threading.Thread(target=drain, name=f"drain-{proc.pid}", daemon=True)
    reader.start()
    server = Server(proc, f"http://127.0.0.1:{port}", output, reader)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            server.stop()
            raise AssertionError(f"the server exited {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.base}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"the server did not answer /healthz within {timeout:g} s:\n{server.log()}")
        time.sleep(0.1)


@contextmanager
def serving(project: Project, *extra: str) -> Iterator[Server]:
    """A started `Server`, stopped by PID at the end whatever happens."""
    server = start_server(project, *extra)
    try:
        yield server
    finally:
        server.stop()


def audit_records(project: Project) -> list[dict[str, Any]]:
    """Every record of the project's audit log, through `dbt-mxcp log`."""
    return list(json.loads(project.mxcp("log", "--output", "json").stdout))


def recorded_ok(records: Sequence[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Audit keys of the records of answered calls."""
    return Counter((r["endpoint"]["name"], canonical(r["arguments"])) for r in records if r["status"] == "ok")


def missing_from_log(acked: Counter[tuple[str, str]], records: Sequence[dict[str, Any]]) -> list[str]:
    """The acknowledged calls that have no record of their own (counted per endpoint and arguments)."""
    have = recorded_ok(records)
    return [f"{name} {args}: {n} answered, {have[(name, args)]} recorded"
            for (name, args), n in sorted(acked.items()) if have[(name, args)] < n]
