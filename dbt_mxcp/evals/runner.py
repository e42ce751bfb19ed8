"""One eval: the conversation loop, tool calls through the pipeline, and the assertions on what happened.

The model is offered exactly the tools its `user_context` would see in `tools/list` when served,
and each call it makes is `Pipeline.call(..., transport="eval")`: claims, validation, defaults,
policies, limits and the audit log, as for a served call. A refused call becomes an error result
the model can react to, as MCP hands it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..cli.report import CaseResult, Status
from ..errors import CallError, MxcpError
from ..pipeline import Pipeline
from .llm import Connection, LlmError, ToolCall, ToolDef, ToolResult, start_chat
from .suite import EvalCase, EvalTest, ExpectedCall

EXCERPT = 300  # characters of the answer a failure shows


def call_tool(pipeline: Pipeline, call: ToolCall, user: Mapping[str, Any] | None) -> ToolResult:
    """Answer one tool call through the full pipeline; a CallError is an error result, not a failure."""
    try:
        endpoint = pipeline.endpoint("tool", call.name)
        outcome = pipeline.call(endpoint, call.arguments, user, transport="eval")
    except CallError as exc:
        return ToolResult(call, str(exc), True)
    return ToolResult(call, json.dumps(outcome.structured()), False)


def run_eval(pipeline: Pipeline, case: EvalCase, conn: Connection, system: str | None) -> CaseResult:
    """Run one eval to its end: pass, fail (an assertion, or max_turns) or error (the LLM, the warehouse
    or a bug). `system` is the system prompt when the suite sets none."""
    started = time.perf_counter()
    test = case.test

    def result(status: Status, message: str | None = None) -> CaseResult:
        return CaseResult(case.suite.suite, test.name, status, time.perf_counter() - started, message, path=case.path)

    made: list[ToolResult] = []  # every call the model made, answered
    try:
        tools = [ToolDef(e.name, e.description, e.input_schema()) for e in pipeline.listed("tool", test.user_context)]
        chat = start_chat(conn, case.suite.system or system, test.prompt, tools)
        answer = None
        for _ in range(test.max_turns):
            reply = chat.next()
            if not reply.calls:
                answer = reply.text
                break
            results = [call_tool(pipeline, c, test.user_context) for c in reply.calls]
            made += results
            chat.add_results(results)
    except LlmError as exc:
        return result("error", f"the LLM ({case.model}): {exc}")
    except MxcpError as exc:  # e.g. the warehouse cannot be opened
        return result("error", str(exc))
    except Exception as exc:  # a bug fails this eval, not the run
        return result("error", f"internal error: {type(exc).__name__}: {exc}")
    if answer is None:
        problems = [f"max_turns {test.max_turns}: the model was still calling tools after {test.max_turns} "
                    "turns and never answered"]
    else:
        problems = check(test, made, answer)
    if not problems:
        return result("pass")
    details = [f"called {_describe(r)}" for r in made] or ["called no tool"]
    if answer is not None:
        details.append(f"answer: {_excerpt(answer, EXCERPT)!r}")
    return result("fail", "\n".join(problems + details))


def check(test: EvalTest, made: Sequence[ToolResult], answer: str) -> list[str]:
    """What the eval asserts and did not happen, one line each."""
    problems = []
    for expected in test.must_call:
        if not any(_matches(expected, r.call) for r in made):
            args = json.dumps(expected.args)
            how = "exactly these arguments" if expected.exact else "these arguments"
            problems.append(f"must_call {expected.tool} {args}: no call with {how}")
    for name in test.must_not_call:
        count = sum(r.call.name == name for r in made)
        if count:
            problems.append(f"must_not_call {name}: called {count} time{'s' if count > 1 else ''}")
    folded = answer.casefold()
    problems += [f"answer_contains {text!r}: not in the answer" for text in test.answer_contains
                 if text.casefold() not in folded]
    problems += [f"answer_not_contains {text!r}: in the answer" for text in test.answer_not_contains
                 if text.casefold() in folded]
    return problems


def _matches(expected: ExpectedCall, call: ToolCall) -> bool:
    args = call.arguments
    if call.name != expected.tool or not isinstance(args, Mapping):
        return False
    if expected.exact and set(args) != set(expected.args):
        return False
    return all(k in args and _same(v, args[k]) for k, v in expected.args.items())


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _describe(result: ToolResult) -> str:
    """``name {args} → ok`` or ``→ error: why``."""
    args = json.dumps(result.call.arguments, default=str)
    return f"{result.call.name} {args} → " + (f"error: {_excerpt(result.text, 120)}" if result.is_error else "ok")


def _excerpt(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
