"""`dbt-mxcp evals` on a real build of integration_tests/, every tool call through the real pipeline.

The external LLM cannot be reached from here (nor would it be deterministic), so `FakeLLM` — a small
real HTTP server on 127.0.0.1 written in this test — is the one stand-in. It speaks both the Anthropic
Messages and the OpenAI Chat Completions wire formats and follows a script written in each prompt:

    call NAME {args}               one turn calling one tool
    calls [[NAME, {args}], ...]    one turn calling several tools at once
    loop NAME {args}               call the tool on every turn (it never answers)
    busy                           answer the first request 429 (the client must retry)
    garbage                        answer a JSON object that is no reply at all
    say TEXT                       begin the answer with TEXT

When the script is done it answers ``TEXT | result | result ...``: the text of every tool result it was
sent, so the facts in an answer can only come from the warehouse through the pipeline. It checks that
each request carries the tools in its provider's shape and the results of exactly the calls it made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml

from tests.helpers import REPO, Project, copy_project

KEY = "sk-stand-in-4f9c2a7e1b"  # the stand-in's one valid API key
ENV_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class BadRequest(Exception):
    """A request the real API would refuse: the stand-in answers 400 with the reason."""


@dataclass
class Script:
    """What the stand-in does for one prompt."""

    turns: list[list[tuple[str, Any]]] = field(default_factory=list)
    loop: tuple[str, Any] | None = None
    say: str = "Answer:"
    busy: bool = False
    garbage: bool = False

    @classmethod
    def of(cls, prompt: str) -> Script:
        script = cls()
        for text in prompt.splitlines():
            word, _, rest = text.strip().partition(" ")
            if word == "call":
                name, _, args = rest.partition(" ")
                script.turns.append([(name, json.loads(args or "{}"))])
            elif word == "calls":
                script.turns.append([(name, args) for name, args in json.loads(rest)])
            elif word == "loop":
                name, _, args = rest.partition(" ")
                script.loop = (name, json.loads(args))
            elif word == "say":
                script.say = rest
            elif word in ("busy", "garbage"):
                setattr(script, word, True)
        return script

    def calls(self, turn: int) -> list[tuple[str, Any]]:
        if turn < len(self.turns):
            return self.turns[turn]
        return [self.loop] if self.loop else []


class FakeLLM:
    """The stand-in LLM: both wire formats, scripted by the prompt; it keeps every request it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()  # (provider, prompt)
        self._lock = threading.Lock()

    def handle(self, path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path == "/v1/messages":
            provider, key = "anthropic", headers.get("x-api-key") or ""
            authorised = key == KEY and headers.get("anthropic-version") == "2023-06-01"
        elif path == "/v1/chat/completions":
            provider, key = "openai", (headers.get("authorization") or "").removeprefix("Bearer ")
            authorised = key == KEY
        else:
            return 404, {"error": {"message": f"no such path {path}"}}, {}
        if not authorised:  # echoes the key, as some real APIs do: the client must not show it
            return 401, {"error": {"type": "authentication_error", "message": f"invalid API key {key!r}"}}, {}
        try:
            return self._answer(provider, body)
        except (BadRequest, KeyError, TypeError, IndexError, StopIteration, ValueError) as exc:
            return 400, {"error": {"type": "invalid_request_error", "message": f"bad request: {exc!r}"}}, {}

    def _answer(self, provider: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        messages = body["messages"]
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        tools = _tool_names(provider, body)
        with self._lock:
            self.requests.append({"provider": provider, "prompt": prompt, "tools": tools, "body": body})
            first = (provider, prompt) not in self._seen
            self._seen.add((provider, prompt))
        script = Script.of(prompt)
        if script.busy and first:
            return 429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "0"}
        if script.garbage:
            return 200, {"unexpected": True}, {}
        turn = sum(m["role"] == "assistant" for m in messages)
        results = _tool_results(provider, messages)
        calls = script.calls(turn)
        for name, _ in calls:
            if name not in tools and "refused" not in prompt:
                raise BadRequest(f"asked to call {name}, which the request does not offer")
        if calls:
            return 200, _calls_reply(provider, body["model"], turn, calls), {}
        return 200, _text_reply(provider, body["model"], " | ".join([script.say, *results])), {}

    def prompts(self, text: str) -> list[dict[str, Any]]:
        """The requests whose prompt contains `text`."""
        return [r for r in self.requests if text in r["prompt"]]


def _tool_names(provider: str, body: dict[str, Any]) -> list[str]:
    if provider == "anthropic":
        if not isinstance(body["max_tokens"], int) or body["model"] != "stand-in-model":
            raise BadRequest("max_tokens and model are required")
        tools = body.get("tools", [])
        if any(set(t) - {"name", "description", "input_schema"} or t["input_schema"]["type"] != "object"
               for t in tools):
            raise BadRequest("a tool is not {name, description, input_schema}")
        return [t["name"] for t in tools]
    if not isinstance(body["max_completion_tokens"], int):
        raise BadRequest("max_completion_tokens is required")
    tools = body.get("tools", [])
    if any(t["type"] != "function" or t["function"]["parameters"]["type"] != "object" for t in tools):
        raise BadRequest("a tool is not {type: function, function: {name, description, parameters}}")
    return [t["function"]["name"] for t in tools]


def _tool_results(provider: str, messages: list[dict[str, Any]]) -> list[str]:
    """The tool results sent back, after checking they answer exactly the calls the stand-in made."""
    texts: list[str] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if provider == "anthropic":
            asked = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
            blocks = messages[i + 1]["content"]
            if messages[i + 1]["role"] != "user" or any(b["type"] != "tool_result" for b in blocks):
                raise BadRequest("tool results must follow in one user message of tool_result blocks")
            answered = [b["tool_use_id"] for b in blocks]
            texts += [("ERROR " if b.get("is_error") else "") + b["content"] for b in blocks]
        else:
            asked = [c["id"] for c in message.get("tool_calls") or []]
            replies = messages[i + 1:i + 1 + len(asked)]
            if any(r["role"] != "tool" for r in replies):
                raise BadRequest("each tool call needs a `tool` message")
            answered = [r["tool_call_id"] for r in replies]
            texts += [r["content"] for r in replies]
        if answered != asked:
            raise BadRequest(f"tool results {answered} do not answer the calls {asked}")
    return texts


def _calls_reply(provider: str, model: str, turn: int, calls: list[tuple[str, Any]]) -> dict[str, Any]:
    if provider == "anthropic":
        blocks = [{"type": "tool_use", "id": f"toolu_{turn}_{i}", "name": name, "input": args}
                  for i, (name, args) in enumerate(calls)]
        return {"id": f"msg_{turn}", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "Let me look that up."}, *blocks],
                "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}
    tool_calls = [{"id": f"call_{turn}_{i}", "type": "function",
                   "function": {"name": name, "arguments": json.dumps(args)}} for i, (name, args) in enumerate(calls)]
    return {"id": f"chatcmpl-{turn}", "object": "chat.completion", "model": model, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
         "finish_reason": "tool_calls"}]}


def _text_reply(provider: str, model: str, text: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"id": "msg_end", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1}}
    return {"id": "chatcmpl-end", "object": "chat.completion", "model": model, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


class _Handler(BaseHTTPRequestHandler):
    llm: FakeLLM

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        status, document, headers = self.llm.handle(self.path, self.headers, body)
        data = json.dumps(document).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[FakeLLM, str]]:
    """The stand-in LLM on 127.0.0.1 and its base URL."""
    llm = FakeLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"llm": llm}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield llm, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A private build of integration_tests/: these tests write its mxcp.yml and evals/."""
    built = Project(copy_project(REPO / "integration_tests", tmp_path_factory.mktemp("evals") / "integration_tests"))
    built.dbt("deps")
    built.dbt("build")
    return built


def run_evals(project: Project, url: str, suites: dict[str, Any], *args: str, provider: str = "openai",
              key: str = KEY, settings: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """Write mxcp.yml and evals/<file>.yml, then run `dbt-mxcp evals` with the key in the provider's env var."""
    base = f"{url}/v1" if provider == "openai" else url  # each as its SDK takes it
    evals = {"provider": provider, "model": "stand-in-model", "base_url": base, **(settings or {})}
    (project.path / "mxcp.yml").write_text(yaml.safe_dump({"evals": evals}))
    folder = project.path / "evals"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, suite in suites.items():
        (folder / name).write_text(suite if isinstance(suite, str) else yaml.safe_dump(suite, sort_keys=False))
    return project.mxcp("evals", *args, check=False, extra_env={ENV_KEYS[provider]: key})


def _results(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(proc.stdout)["results"]}


GOOD = {"suite": "people", "tests": [
    {"name": "anna_masked",  # the output policy masks emails for non-admins, in what the model sees too
     "prompt": 'Who is Anna?\ncall search_people {"name_query": "anna", "teams": ["eng"]}',
     "user_context": {"role": "analyst"},
     "must_call": [{"tool": "search_people", "args": {"name_query": "anna"}}],
     "must_not_call": ["salary_band"],
     "answer_contains": ["Joanna", '"email": "****"'], "answer_not_contains": ["anna@example.com"]},
    {"name": "default_applied",  # include_inactive defaults to true: Bob, Carla (inactive) and Hank
     "prompt": 'How many in sales?\ncall count_people {"team": "sales"}',
     "must_call": [{"tool": "count_people", "args": {"team": "sales"}, "exact": True}],
     "answer_contains": ['{"result": 3}']},
    {"name": "hr_may",
     "prompt": 'Top salaries (hr-may)?\ncall salary_band {"band_min": 6000}',
     "user_context": {"groups": ["hr"]},
     "must_call": [{"tool": "salary_band", "args": {"band_min": 6000.0}}],
     "answer_contains": ["Eve", "Anna"], "answer_not_contains": ["Joanna"]},
    {"name": "staff_refused",  # not offered to staff; called anyway, the input policy refuses it
     "prompt": 'Top salaries (staff-refused)?\ncall salary_band {"band_min": 0}\nsay refused:',
     "user_context": {"groups": ["staff"]},
     "must_call": [{"tool": "salary_band"}],
     "answer_contains": ["HR only"]},
    {"name": "bad_argument",  # the pipeline's validation answers; the eval carries on
     "prompt": 'Count marketing.\ncall count_people {"team": "marketing"}\ncall count_people {"team": "eng"}',
     "answer_contains": ["invalid arguments", "'team'", '{"result": 4}']},
    {"name": "parallel",
     "prompt": 'Eng and hr?\ncalls [["count_people", {"team": "eng"}], ["count_people", {"team": "hr"}]]',
     "max_turns": 2,
     "must_call": [{"tool": "count_people", "args": {"team": "eng"}}, {"tool": "count_people", "args": {"team": "hr"}}],
     "answer_contains": ['{"result": 4} | {"result": 2}']},
    {"name": "retried", "prompt": "Say hi.\nbusy\nsay hi there", "max_turns": 1, "answer_contains": ["HI THERE"]},
]}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_passing_suite_goes_through_the_pipeline(project: Project, stand_in: tuple[FakeLLM, str], provider: str,
                                                   tmp_path: Path) -> None:
    llm, url = stand_in
    junit = tmp_path / "evals.xml"
    proc = run_evals(project, url, {"people.yml": GOOD}, "--output", "json", "--junit-xml", str(junit),
                     provider=provider)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _results(proc)
    assert {n: r["status"] for n, r in results.items()} == {t["name"]: "pass" for t in GOOD["tests"]}
    assert results["anna_masked"]["suite"] == "people" and results["anna_masked"]["path"] == "evals/people.yml"
    assert json.loads(proc.stdout)["summary"]["pass"] == len(GOOD["tests"])

    # Offered: what tools/list shows each caller. salary_band is HR-only (a user-only deny rule), and
    # write tools are never offered: evals run without the write database.
    requests = [r for r in llm.requests if r["provider"] == provider]
    hr = next(r for r in requests if "hr-may" in r["prompt"])
    staff = next(r for r in requests if "staff-refused" in r["prompt"])
    assert "salary_band" in hr["tools"] and "search_people" in hr["tools"]
    assert "salary_band" not in staff["tools"] and set(staff["tools"]) == set(hr["tools"]) - {"salary_band"}
    assert not {"add_note", "delete_notes"} & set(hr["tools"])
    schema = _tool(provider, hr["body"], "count_people")
    assert schema["properties"]["team"]["enum"] == ["eng", "sales", "ops", "hr", "legal"]
    assert schema["required"] == ["team"] and schema["additionalProperties"] is False

    # The tool results the model got: JSON as the MCP server sends it, errors flagged as errors.
    final = [r for r in requests if "staff-refused" in r["prompt"]][-1]["body"]["messages"]
    if provider == "anthropic":
        assert final[-1]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_0_0", "content": "HR only",
                                         "is_error": True}]
    else:
        assert final[-1] == {"role": "tool", "tool_call_id": "call_0_0", "content": "Error: HR only"}
    assert len([r for r in requests if "busy" in r["prompt"]]) == 2  # the 429, then the retry

    cases = ET.parse(junit).getroot().findall("testsuite/testcase")
    assert {c.get("name") for c in cases} == set(results) and not ET.parse(junit).getroot().findall(".//failure")

    # The audit log has every call the model made, as transport "eval", the refusal included.
    records = json.loads(project.mxcp("log", "--output", "json", "--endpoint", "salary_band").stdout)
    assert {(r["transport"], r["status"], tuple(r["caller"]["groups"])) for r in records} >= {
        ("eval", "ok", ("hr",)), ("eval", "denied", ("staff",))}


def _tool(provider: str, body: dict[str, Any], name: str) -> dict[str, Any]:
    if provider == "anthropic":
        return dict(next(t["input_schema"] for t in body["tools"] if t["name"] == name))
    return dict(next(t["function"]["parameters"] for t in body["tools"] if t["function"]["name"] == name))


FAILING = {"suite": "failing", "tests": [
    {"name": "wrong_args", "prompt": 'call search_people {"name_query": "ann"}',
     "must_call": [{"tool": "search_people", "args": {"name_query": "anna"}}]},
    {"name": "not_exact", "prompt": 'call count_people {"team": "eng", "include_inactive": false}',
     "must_call": [{"tool": "count_people", "args": {"team": "eng"}, "exact": True}]},
    {"name": "forbidden_call", "prompt": 'call get_person {"id": 1}', "must_not_call": ["get_person"]},
    {"name": "answer_checks", "prompt": 'call get_person {"id": 3}',
     "answer_contains": ["Alice"], "answer_not_contains": ["bob"]},
    {"name": "never_answers", "prompt": 'loop count_people {"team": "eng"}', "max_turns": 3},
    {"name": "garbled_reply", "prompt": "garbage"},
    {"name": "fine", "prompt": "say ok", "answer_contains": ["ok"]},
]}


def test_failing_evals_say_why(project: Project, stand_in: tuple[FakeLLM, str]) -> None:
    _, url = stand_in
    proc = run_evals(project, url, {"failing.yml": FAILING}, "--output", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = _results(proc)
    status = {n: r["status"] for n, r in results.items()}
    assert status == {"wrong_args": "fail", "not_exact": "fail", "forbidden_call": "fail", "answer_checks": "fail",
                      "never_answers": "fail", "garbled_reply": "error", "fine": "pass"}
    message = {n: r["message"] for n, r in results.items()}
    reason, calls, answer = message["wrong_args"].splitlines()
    assert reason == 'must_call search_people {"name_query": "anna"}: no call with these arguments'
    assert calls == 'called search_people {"name_query": "ann"} → ok'
    # The answer, from the warehouse through the output policy, cut to 300 characters.
    assert answer.startswith('answer: \'Answer: | {"result": [{"id": 1, "name": "Ann", "email": "****", "team": "eng"')
    assert answer.endswith("…'") and len(answer) == len("answer: ''") + 300
    assert message["not_exact"].startswith('must_call count_people {"team": "eng"}: no call with exactly these '
                                           "arguments\ncalled count_people "
                                           '{"team": "eng", "include_inactive": false} → ok')
    assert message["forbidden_call"].startswith("must_not_call get_person: called 1 time\n")
    assert message["answer_checks"].splitlines()[:2] == ["answer_contains 'Alice': not in the answer",
                                                         "answer_not_contains 'bob': in the answer"]
    assert '"name": "Bob"' in message["answer_checks"]
    assert message["never_answers"].splitlines() == [
        "max_turns 3: the model was still calling tools after 3 turns and never answered",
        *['called count_people {"team": "eng"} → ok'] * 3]
    assert message["garbled_reply"].startswith("the LLM (stand-in-model): unexpected openai response (KeyError")


def test_text_output_fail_fast_and_choosing(project: Project, stand_in: tuple[FakeLLM, str]) -> None:
    _, url = stand_in
    suites = {"failing.yml": FAILING, "people.yml": GOOD}
    proc = run_evals(project, url, suites, "--fail-fast", "--threads", "1", "--suite", "failing")
    assert proc.returncode == 1
    assert "1 of 7 FAIL failing: wrong_args" in proc.stdout
    assert "2 of 7 SKIP failing: not_exact" in proc.stdout
    assert "Failure in failing: wrong_args (evals/failing.yml)" in proc.stdout
    assert "  must_call search_people" in proc.stdout
    assert "Done. PASS=0 FAIL=1 ERROR=0 SKIP=6 TOTAL=7" in proc.stdout

    proc = run_evals(project, url, suites, "--test", "fine", "--test", "default_applied", provider="anthropic")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Finished running 2 evals" in proc.stdout and "Done. PASS=2 FAIL=0 ERROR=0 SKIP=0 TOTAL=2" in proc.stdout


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_api_key_is_never_shown(project: Project, stand_in: tuple[FakeLLM, str], provider: str,
                                    tmp_path: Path) -> None:
    _, url = stand_in
    wrong = "sk-wrong-91c3d7e5aa"
    junit = tmp_path / "evals.xml"
    suite = {"suite": "s", "tests": [{"name": "hi", "prompt": "say hi"}]}
    for output in ("text", "json"):
        proc = run_evals(project, url, {"s.yml": suite}, "--output", output, "--junit-xml", str(junit),
                         provider=provider, key=wrong)
        assert proc.returncode == 1
        shown = proc.stdout + proc.stderr + junit.read_text()
        assert wrong not in shown and "HTTP 401" in shown and "invalid API key '[API key]'" in shown

    # From mxcp.yml, rendered from the environment: the right key works; a wrong one is hidden as well.
    settings = {"api_key": "{{ env_var('EVALS_STAND_IN_KEY') }}"}
    proc = run_evals(project, url, {"s.yml": suite}, provider=provider, key="", settings=settings)
    assert proc.returncode == 2 and "EVALS_STAND_IN_KEY" in proc.stderr
    for key, code in ((KEY, 0), (wrong, 1)):
        (project.path / "mxcp.yml").write_text(yaml.safe_dump({"evals": {
            "provider": provider, "model": "stand-in-model", "base_url": f"{url}/v1" if provider == "openai" else url,
            **settings}}))
        proc = project.mxcp("evals", check=False, extra_env={"EVALS_STAND_IN_KEY": key})
        assert proc.returncode == code and wrong not in proc.stdout + proc.stderr

    # The provider's own API needs a key: without one, evals stop before asking anything (exit 2).
    proc = run_evals(project, url, {"s.yml": suite}, provider=provider, key="", settings={"base_url": None})
    assert proc.returncode == 2
    assert f"evals need an API key for {provider}: set {ENV_KEYS[provider]}" in proc.stderr


def test_configuration_errors(project: Project, stand_in: tuple[FakeLLM, str]) -> None:
    _, url = stand_in
    typo = {"suite": "typo", "tests": [{"name": "t", "prompt": "say hi", "must_cal": [{"tool": "get_person"}]}]}
    proc = run_evals(project, url, {"typo.yml": typo})
    assert proc.returncode == 2
    assert "evals/typo.yml: tests.0.must_cal: unknown key (check its spelling; see docs/evals.md" in proc.stderr

    unknown_tool = {"suite": "u", "tests": [{"name": "t", "prompt": "say hi", "must_not_call": ["get_persn"]}]}
    bad_arg = {"suite": "v", "tests": [{"name": "t", "prompt": "say hi", "must_call": [{"tool": "get_person",
                                                                                       "argz": {"id": 1}}]}]}
    proc = run_evals(project, url, {"u.yml": unknown_tool, "v.yml": bad_arg, "w.yml": "suite: [unclosed"})
    assert proc.returncode == 2
    assert "evals/u.yml: test t: unknown tool 'get_persn'" in proc.stderr
    assert "evals/v.yml: tests.0.must_call.0.argz: unknown key" in proc.stderr
    assert "w.yml is not valid YAML" in proc.stderr

    good = {"people.yml": GOOD}
    proc = run_evals(project, url, good, "--suite", "nope")
    assert proc.returncode == 2 and "no eval suite named 'nope' (suites: people)" in proc.stderr
    proc = run_evals(project, url, good, settings={"model": None})
    assert proc.returncode == 2 and "no model for suite 'people'" in proc.stderr
    proc = run_evals(project, url, good, settings={"temperature": 5})
    assert proc.returncode == 2 and "evals.temperature" in proc.stderr

    proc = run_evals(project, url, {})
    assert proc.returncode == 0 and "Nothing to evaluate" in proc.stdout
