"""The MCP adapter: the one module that speaks MCP, through the official SDK's low-level server.

It maps each MCP request onto the pipeline and each pipeline outcome onto the wire. Argument and
policy failures become `isError` results the model can read; an unknown tool is a protocol error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp import MCPError, types
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)

from .. import __version__
from ..auth.middleware import USER_KEY
from ..engine import Interrupter
from ..errors import CallError
from ..jsonvalues import dumps
from ..pipeline import Outcome, Reporter, parse_text_value
from ..registry import Endpoint, Kind
from .live import LiveProject

log = logging.getLogger("dbt_mxcp.server")
T = TypeVar("T")
PAGE_SIZE = 100
MODERN = "2026-07-28"
RESOURCE_NOT_FOUND = -32002  # the 2025-11-25 spelling; 2026-07-28 uses INVALID_PARAMS


def _relaxed_row(endpoint: Endpoint, row: dict[str, Any]) -> dict[str, Any]:
    """The row schema as clients see it after output policies: filtered fields become optional,
    masked fields may hold the mask."""
    dropped: set[str] = set()
    masked: set[str] = set()
    for compiled in endpoint.output_rules:
        rule = compiled.rule
        if rule.action == "filter_fields":
            dropped |= {f.split(".")[0] for f in rule.fields or []}
        elif rule.action == "mask_fields":
            masked |= {f.split(".")[0] for f in rule.fields or []}
        elif rule.action == "filter_sensitive_fields":
            dropped |= {p.split(".")[0] for p in endpoint.sensitive_paths}
    if not (dropped or masked) or "properties" not in row:
        return row
    row = dict(row)
    row["properties"] = {k: ({"description": v["description"]} if "description" in v else {})
                         if k in masked else v for k, v in row["properties"].items()}
    if "required" in row:
        row["required"] = [r for r in row["required"] if r not in dropped]
    return row


def output_schema(endpoint: Endpoint) -> dict[str, Any] | None:
    """The tool's `outputSchema`, matching what `Outcome.structured` sends."""
    schema = endpoint.return_schema()
    if schema is None or endpoint.return_type is None:
        return None
    if endpoint.return_type.type == "object":
        return _relaxed_row(endpoint, schema)
    if endpoint.return_type.type == "array" and isinstance(schema.get("items"), dict):
        schema = {**schema, "items": _relaxed_row(endpoint, schema["items"])}
    return {
        "type": "object",
        "properties": {"result": schema, "truncated": {"type": "boolean"}, "note": {"type": "string"}},
        "required": ["result"],
    }


def tool_of(endpoint: Endpoint) -> types.Tool:
    """An endpoint as an MCP Tool: full input schema, output schema, annotations."""
    spec = endpoint.spec
    hints = getattr(spec, "annotations", None)
    declared = hints.model_dump(exclude_none=True) if hints is not None else {}
    if getattr(spec, "access", "read") == "write":
        defaults = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": False}
    else:
        # Reads run on a read-only warehouse: they change nothing and see a closed world.
        defaults = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}
    annotations = {**defaults, **declared}
    return types.Tool.model_validate({
        "name": endpoint.name,
        "title": getattr(spec, "title", None) or annotations.get("title"),
        "description": endpoint.description,
        "inputSchema": endpoint.input_schema(),
        "outputSchema": output_schema(endpoint),
        "annotations": annotations,
    })


class _SessionReporter:
    """Progress and log messages from a call's worker thread to its MCP client."""

    def __init__(self, ctx: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop

    def progress(self, done: float, total: float | None, message: str | None) -> None:
        asyncio.run_coroutine_threadsafe(self._ctx.session.report_progress(done, total, message), self._loop)

    def log(self, level: str, message: str) -> None:
        if self._ctx.protocol_version == MODERN:
            return  # 2026-07-28 deprecates server log notifications; the server log has it
        coro = self._ctx.session.send_log_message(level, message, logger="dbt_mxcp.endpoint",
                                                  related_request_id=self._ctx.request_id)
        asyncio.run_coroutine_threadsafe(coro, self._loop)


def _page(items: Sequence[T], cursor: str | None) -> tuple[Sequence[T], str | None]:
    start = 0
    if cursor:
        if not cursor.isdigit() or int(cursor) > len(items):
            raise MCPError(types.INVALID_PARAMS, f"invalid cursor {cursor!r}")
        start = int(cursor)
    end = start + PAGE_SIZE
    return items[start:end], (str(end) if end < len(items) else None)


class McpAdapter:
    """Builds the SDK server for a live project and tells clients when its endpoints change."""

    def __init__(self, live: LiveProject) -> None:
        self.live = live
        settings = live.current.loaded.settings.server
        self.name = settings.name or f"dbt-mxcp ({live.current.loaded.project.name})"
        self.instructions = settings.instructions or self._default_instructions()
        self.bus = InMemorySubscriptionBus()
        self._legacy_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.in_flight = 0
        self.draining = False
        self.transport = "stdio"  # set by the transport that runs the server; recorded in the audit log
        self.stdio_user: dict[str, Any] | None = None  # the caller when there is no HTTP request
        self._idle = anyio.Event()
        self.server = self._build()

    def _default_instructions(self) -> str | None:
        # The `application` exposure that stands for the server describes it best.
        manifest = self.live.current.loaded.manifest
        for raw in (manifest.data.get("exposures") or {}).values():
            if raw.get("type") == "application" and raw.get("description"):
                return str(raw["description"])
        return None

    def _build(self) -> Server[Any]:
        server: Server[Any] = Server(
            self.name,
            version=__version__,
            instructions=self.instructions,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
            on_subscriptions_listen=ListenHandler(self.bus),
        )
        # The SDK tells legacy clients listChanged: false unless asked otherwise.
        options = NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True)
        original = server.create_initialization_options
        server.create_initialization_options = partial(original, options)  # type: ignore[method-assign]
        server.middleware.append(self._track_sessions)
        return server

    async def _track_sessions(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        if ctx.protocol_version != MODERN and ctx.session is not None:
            self._legacy_sessions.add(ctx.session)
        return await call_next(ctx)

    async def notify_changed(self) -> None:
        """Tell every client that the tools, resources and prompts changed."""
        for event in (ToolsListChanged(), ResourcesListChanged(), PromptsListChanged()):
            await self.bus.publish(event)
        for session in list(self._legacy_sessions):
            for send in (session.send_tool_list_changed, session.send_resource_list_changed,
                         session.send_prompt_list_changed):
                try:
                    await send()
                except Exception as exc:  # a closed session must not stop the others
                    log.debug("list_changed not delivered: %s", exc)

    def _caller(self, ctx: Any) -> dict[str, Any] | None:
        """The authenticated caller: from the HTTP request (see auth.middleware), else the stdio identity."""
        request = getattr(ctx, "request", None)
        if request is not None:
            user: dict[str, Any] | None = request.scope.get(USER_KEY)
            return user
        return self.stdio_user

    def _visible(self, ctx: Any, kind: Kind) -> list[Endpoint]:
        listed: list[Endpoint] = self.live.current.pipeline.listed(kind, self._caller(ctx))
        return listed

    # -- running a call off the event loop -----------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Refuse new calls and wait (up to `timeout` s) for the calls in flight to finish."""
        self.draining = True
        if self.in_flight:
            with anyio.move_on_after(timeout):
                await self._idle.wait()

    async def _run(self, ctx: Any, call: Callable[[Interrupter, Reporter], Outcome]) -> Outcome:
        if self.draining:
            raise MCPError(types.INTERNAL_ERROR, "the server is shutting down; retry on another instance")
        self.in_flight += 1
        try:
            return await self._run_call(ctx, call)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self.draining:
                self._idle.set()

    async def _run_call(self, ctx: Any, call: Callable[[Interrupter, Reporter], Outcome]) -> Outcome:
        interrupter = Interrupter()
        reporter = _SessionReporter(ctx, asyncio.get_running_loop())
        try:
            if not (ctx.meta and ctx.meta.get("progress_token") is not None):
                return await anyio.to_thread.run_sync(call, interrupter, reporter, abandon_on_cancel=True)
            failure: CallError | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick, ctx)
                try:
                    outcome = await anyio.to_thread.run_sync(call, interrupter, reporter, abandon_on_cancel=True)
                except CallError as exc:
                    failure = exc  # raised outside the task group, not wrapped in an exception group
                finally:
                    tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
            return outcome
        except anyio.get_cancelled_exc_class():
            interrupter.interrupt()  # MCP cancellation: stop the DuckDB query too
            log.info("call cancelled: its query was interrupted")
            raise

    @staticmethod
    async def _tick(ctx: Any) -> None:
        """Progress for a long call whose client asked for it: seconds elapsed, each second."""
        elapsed = 0
        while True:
            await anyio.sleep(1)
            elapsed += 1
            await ctx.session.report_progress(elapsed, None, f"running for {elapsed} s")

    # -- tools ---------------------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        tools = [tool_of(e) for e in self._visible(ctx, "tool")]
        page, cursor = _page(tools, params.cursor if params else None)
        return types.ListToolsResult(tools=list(page), next_cursor=cursor)

    @staticmethod
    def _named(served: Any, kind: Kind, name: str) -> Endpoint:
        """The enabled endpoint; an unknown name is a protocol error (-32602), not a tool error."""
        endpoint: Endpoint | None = served.registry.get(kind, name)
        if endpoint is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown {kind}: {name}")
        return endpoint

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        with self.live.use() as served:
            endpoint = self._named(served, "tool", params.name)
            arguments = params.arguments if params.arguments is not None else {}
            caller = self._caller(ctx)
            try:
                outcome = await self._run(ctx, lambda i, r: served.pipeline.call(endpoint, arguments, caller, i, r,
                                                                                    self.transport))
            except CallError as exc:
                return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)
        value = outcome.structured()
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))],
                                    structured_content=value)

    # -- resources -----------------------------------------------------------------------------

    def _resources(self, ctx: Any, *, static: bool) -> list[Endpoint]:
        """The caller's resources: static URIs, or templates with {variables}."""
        return [e for e in self._visible(ctx, "resource")
                if e.uri_template is not None and e.uri_template.is_static == static]

    async def _list_resources(self, ctx: Any,
                              params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        items = [types.Resource(uri=e.name, name=getattr(e.spec, "name", None) or e.name,
                                description=e.description, mime_type=getattr(e.spec, "mime_type", None))
                 for e in self._resources(ctx, static=True)]
        page, cursor = _page(items, params.cursor if params else None)
        return types.ListResourcesResult(resources=list(page), next_cursor=cursor)

    async def _list_resource_templates(self, ctx: Any, params: types.PaginatedRequestParams | None,
                                       ) -> types.ListResourceTemplatesResult:
        items = [types.ResourceTemplate(uri_template=e.name, name=getattr(e.spec, "name", None) or e.name,
                                        description=e.description, mime_type=getattr(e.spec, "mime_type", None))
                 for e in self._resources(ctx, static=False)]
        page, cursor = _page(items, params.cursor if params else None)
        return types.ListResourceTemplatesResult(resource_templates=list(page), next_cursor=cursor)

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        with self.live.use() as served:
            match = served.registry.match_resource(uri)
            if match is None:
                raise MCPError(self._not_found_code(ctx), f"Resource not found: {uri}", {"uri": uri})
            caller = self._caller(ctx)
            try:
                outcome = await self._run(ctx, lambda i, r: served.pipeline.read_resource(uri, caller, i, r,
                                                                                             self.transport))
            except CallError as exc:
                code = self._not_found_code(ctx) if exc.kind == "not_found" else types.INVALID_PARAMS \
                    if exc.kind == "invalid_arguments" else types.INTERNAL_ERROR
                raise MCPError(code, str(exc), {"uri": uri}) from None
        endpoint = match[0]
        mime = getattr(endpoint.spec, "mime_type", None) or "application/json"
        text = dumps(outcome.value)
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, text=text, mime_type=mime)])

    @staticmethod
    def _not_found_code(ctx: Any) -> int:
        return types.INVALID_PARAMS if ctx.protocol_version == MODERN else RESOURCE_NOT_FOUND

    # -- prompts -------------------------------------------------------------------------------

    async def _list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        items = [types.Prompt(name=e.name, description=e.description, arguments=[
            types.PromptArgument(name=p.name, description=p.description, required=not p.has_default)
            for p in e.client_parameters]) for e in self._visible(ctx, "prompt")]
        page, cursor = _page(items, params.cursor if params else None)
        return types.ListPromptsResult(prompts=list(page), next_cursor=cursor)

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        with self.live.use() as served:
            endpoint = self._named(served, "prompt", params.name)
            declared = {p.name: p for p in endpoint.parameters}
            arguments: dict[str, Any] = {}
            try:
                for key, text in (params.arguments or {}).items():
                    # MCP sends prompt arguments as strings: convert them by the declared type.
                    arguments[key] = parse_text_value(declared[key], text) if key in declared else text
                outcome = served.pipeline.call(endpoint, arguments, self._caller(ctx), transport=self.transport)
            except ValueError as exc:
                raise MCPError(types.INVALID_PARAMS, f"invalid arguments: {exc}") from None
            except CallError as exc:
                raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        messages = [types.PromptMessage(role="assistant" if m["role"] == "assistant" else "user",
                                        content=types.TextContent(type="text", text=m["content"]))
                    for m in outcome.value]  # MCP prompts have no system role: it is sent as user
        return types.GetPromptResult(description=endpoint.description, messages=messages)

    # -- completions ---------------------------------------------------------------------------

    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        registry = self.live.current.registry
        ref = params.ref
        endpoint = None
        if isinstance(ref, types.PromptReference):
            endpoint = registry.get("prompt", ref.name)
        elif isinstance(ref, types.ResourceTemplateReference):
            endpoint = registry.get("resource", str(ref.uri))
        values: list[str] = []
        if endpoint is not None:
            param = next((p for p in endpoint.parameters if p.name == params.argument.name), None)
            if param is not None and param.enum:
                prefix = params.argument.value or ""
                values = [str(v) for v in param.enum if str(v).startswith(prefix)]
        return types.CompleteResult(completion=types.Completion(values=values[:100], total=len(values),
                                                                has_more=len(values) > 100))
