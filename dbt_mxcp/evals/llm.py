"""The two tool-calling chat APIs evals speak: Anthropic Messages and OpenAI-compatible Chat Completions.

A `Chat` keeps one conversation in its provider's wire format: `next()` asks the model for its
next reply (text and tool calls), `add_results()` hands back what the tools answered. The API key
goes only into request headers; every error message has it removed.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from ..errors import ConfigError
from ..settings import EvalSettings

RETRY_STATUSES = (429, 500, 502, 503, 504, 529)  # 529: Anthropic is overloaded
ATTEMPTS = 3
MAX_RETRY_WAIT = 30.0  # seconds; a longer Retry-After fails the eval instead of stalling the run


@dataclass(frozen=True)
class ToolDef:
    """A tool as the model is offered it."""

    name: str
    description: str | None
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for; `arguments` is what it sent (not always an object)."""

    id: str
    name: str
    arguments: Any


@dataclass(frozen=True)
class Reply:
    """One model turn: its text and the tool calls it wants answered."""

    text: str
    calls: list[ToolCall]


@dataclass(frozen=True)
class ToolResult:
    """What a tool answered, as the MCP server would: JSON text, or the error the model may react to."""

    call: ToolCall
    text: str
    is_error: bool


class LlmError(Exception):
    """The LLM could not be reached, refused the request, or answered in a form that cannot be read."""


@dataclass(frozen=True)
class Connection:
    """Where and how to ask the model."""

    provider: str
    model: str
    base_url: str
    api_key: str | None = field(repr=False)
    max_tokens: int
    temperature: float | None
    timeout: float

    def post(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` as JSON; the answer's JSON object, after retrying rate limits and overloads."""
        url = self.base_url + path
        for attempt in range(ATTEMPTS):
            try:
                response = requests.post(url, json=body, headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:
                raise LlmError(self.redact(f"cannot reach {url}: {type(exc).__name__}: {exc}")) from None
            if response.status_code not in RETRY_STATUSES or attempt + 1 == ATTEMPTS:
                break
            wait = _retry_after(response, attempt)
            if wait > MAX_RETRY_WAIT:
                break
            time.sleep(wait)
        if response.status_code != 200:
            raise LlmError(self.redact(f"{url} answered HTTP {response.status_code}: {_error_text(response)}"))
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise LlmError(self.redact(f"{url} answered with something other than a JSON object: "
                                       f"{response.text[:200]!r}"))
        return data

    def redact(self, text: str) -> str:
        """`text` without the API key (an error body or exception may echo it)."""
        return text.replace(self.api_key, "[API key]") if self.api_key else text


def _retry_after(response: requests.Response, attempt: int) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return float(2 ** attempt)


def _error_text(response: requests.Response) -> str:
    # Both APIs put the reason at error.message.
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else (response.text[:300] or response.reason or "no details")


ENV_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
BASE_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}


def connection(settings: EvalSettings, model: str) -> Connection:
    """The connection `settings` describe, for `model`; ConfigError when the provider's API key is missing."""
    key = settings.api_key.get_secret_value() if settings.api_key else os.environ.get(ENV_KEYS[settings.provider])
    if not key and settings.base_url is None:
        # A gateway at a base_url (a local model) may need no key; the providers' own APIs always do.
        env = ENV_KEYS[settings.provider]
        raise ConfigError(f"evals need an API key for {settings.provider}: set {env}, or evals.api_key in mxcp.yml "
                          f"(e.g. \"{{{{ env_var('{env}') }}}}\")")
    base = (settings.base_url or BASE_URLS[settings.provider]).rstrip("/")
    return Connection(settings.provider, model, base, key or None, settings.max_tokens, settings.temperature,
                      settings.timeout)


class Chat(ABC):
    """One conversation with the model: the prompt, its replies and the tool results so far."""

    def __init__(self, conn: Connection, system: str | None, prompt: str, tools: Sequence[ToolDef]) -> None:
        self.conn = conn
        self.system = system
        self.tools = list(tools)
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]

    def next(self) -> Reply:
        """Ask for the model's next reply (and remember it)."""
        data = self._send()
        try:
            return self._read(data)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise LlmError(self.conn.redact(f"unexpected {self.conn.provider} response ({type(exc).__name__}: "
                                            f"{exc}): {json.dumps(data)[:300]}")) from None

    @abstractmethod
    def _send(self) -> dict[str, Any]: ...

    @abstractmethod
    def _read(self, data: dict[str, Any]) -> Reply: ...

    @abstractmethod
    def add_results(self, results: Sequence[ToolResult]) -> None:
        """Give the model what its tool calls answered."""

    def _options(self) -> dict[str, Any]:
        return {} if self.conn.temperature is None else {"temperature": self.conn.temperature}


class AnthropicChat(Chat):
    """The Messages API: ``POST /v1/messages``, `tool_use` blocks out, `tool_result` blocks back."""

    VERSION: ClassVar[str] = "2023-06-01"

    def _send(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.conn.model, "max_tokens": self.conn.max_tokens,
                                "messages": self.messages, **self._options()}
        if self.system:
            body["system"] = self.system
        if self.tools:
            body["tools"] = [{"name": t.name, "input_schema": t.input_schema,
                              **({"description": t.description} if t.description else {})} for t in self.tools]
        headers = {"anthropic-version": self.VERSION}
        if self.conn.api_key:
            headers["x-api-key"] = self.conn.api_key
        return self.conn.post("/v1/messages", headers, body)

    def _read(self, data: dict[str, Any]) -> Reply:
        content = data["content"]
        if not isinstance(content, list):
            raise TypeError("content is not a list of blocks")
        self.messages.append({"role": "assistant", "content": content})
        text = "".join(b["text"] for b in content if b["type"] == "text")
        calls = [ToolCall(b["id"], b["name"], b.get("input", {})) for b in content if b["type"] == "tool_use"]
        return Reply(text, calls)

    def add_results(self, results: Sequence[ToolResult]) -> None:
        """All results of a turn go back in one user message, as the API requires."""
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": r.call.id, "content": r.text,
             **({"is_error": True} if r.is_error else {})} for r in results]})


class OpenAIChat(Chat):
    """Chat Completions: ``POST /chat/completions``, `tool_calls` out, `tool` messages back."""

    def _send(self) -> dict[str, Any]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        # max_completion_tokens: OpenAI's newer models refuse the older max_tokens.
        body: dict[str, Any] = {"model": self.conn.model, "messages": system + self.messages,
                                "max_completion_tokens": self.conn.max_tokens, **self._options()}
        if self.tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "parameters": t.input_schema,
                **({"description": t.description} if t.description else {})}} for t in self.tools]
        headers = {"Authorization": f"Bearer {self.conn.api_key}"} if self.conn.api_key else {}
        return self.conn.post("/chat/completions", headers, body)

    def _read(self, data: dict[str, Any]) -> Reply:
        message = data["choices"][0]["message"]
        calls = []
        for c in message.get("tool_calls") or []:
            raw = c["function"].get("arguments") or "{}"
            try:
                arguments = json.loads(raw)
            except json.JSONDecodeError:
                arguments = raw  # the pipeline refuses it, and the model sees why
            calls.append(ToolCall(c["id"], c["function"]["name"], arguments))
        content = message.get("content")
        self.messages.append({"role": "assistant", "content": content,
                              **({"tool_calls": message["tool_calls"]} if calls else {})})
        return Reply(content if isinstance(content, str) else "", calls)

    def add_results(self, results: Sequence[ToolResult]) -> None:
        """One `tool` message per call; the format has no error flag, so an error says so in its text."""
        self.messages += [{"role": "tool", "tool_call_id": r.call.id,
                           "content": f"Error: {r.text}" if r.is_error else r.text} for r in results]


CHATS: dict[str, type[Chat]] = {"anthropic": AnthropicChat, "openai": OpenAIChat}


def start_chat(conn: Connection, system: str | None, prompt: str, tools: Sequence[ToolDef]) -> Chat:
    """A new conversation with the provider of `conn`."""
    return CHATS[conn.provider](conn, system, prompt, tools)
