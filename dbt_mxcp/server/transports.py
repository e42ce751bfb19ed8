"""Transports: stdio (the default, for desktop clients) and streamable HTTP on 127.0.0.1.

Both run the reload watcher beside the server: every `interval` seconds it checks dbt's
artifacts, the warehouse file and the endpoint SQL files, and on a change swaps in the new
state and tells clients the lists changed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from .adapter import McpAdapter
from .live import LiveProject

log = logging.getLogger("dbt_mxcp.server")


async def watch(adapter: McpAdapter, live: LiveProject, interval: float) -> None:
    """Reload on change, forever; a failed reload is logged and the old state kept."""
    while True:
        await anyio.sleep(interval)
        try:
            changed = await anyio.to_thread.run_sync(live.reload_if_changed)
        except Exception:  # the server must outlive any reload failure
            log.exception("reload failed; still serving the previous endpoints")
            continue
        if changed:
            await adapter.notify_changed()


SHUTDOWN_GRACE = 30.0  # seconds in-flight calls get to finish after SIGTERM


async def _on_signal(adapter: McpAdapter, stop: Callable[[], None]) -> None:
    """On SIGTERM or SIGINT: refuse new calls, let in-flight ones finish, then `stop`."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: finishing %d call(s) in flight, then exiting", signal.Signals(signum).name,
                     adapter.in_flight)
            await adapter.drain(SHUTDOWN_GRACE)
            stop()
            return


async def _on_hangup(adapter: McpAdapter, live: LiveProject) -> None:
    """On SIGHUP: reload now, settings and secrets included; a bad state keeps the old one (logged)."""
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            log.info("SIGHUP: reloading")
            try:
                changed = await anyio.to_thread.run_sync(partial(live.reload_if_changed, force=True))
            except Exception:  # the server must outlive any reload failure
                log.exception("reload failed; still serving the previous endpoints")
                continue
            if changed:
                await adapter.notify_changed()
            elif live.last_error:
                log.warning("SIGHUP: kept the previous state: %s", live.last_error)


async def serve_stdio(adapter: McpAdapter, live: LiveProject, interval: float) -> None:
    """Serve one client over stdin/stdout until it closes stdin (or SIGTERM, after in-flight calls)."""
    from mcp.server.stdio import stdio_server

    adapter.transport = "stdio"
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, adapter, live, interval)
        tg.start_soon(_on_hangup, adapter, live)
        tg.start_soon(_on_signal, adapter, tg.cancel_scope.cancel)
        async with stdio_server() as (read_stream, write_stream):
            await adapter.server.run(read_stream, write_stream, adapter.server.create_initialization_options())
        tg.cancel_scope.cancel()


def _uvicorn_server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, minus its own signal handling: ours drains in-flight MCP calls first."""

        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return Server


def _allowed(host: str, port: int, extra_hosts: Sequence[str], extra_origins: Sequence[str],
             ) -> tuple[list[str], list[str]]:
    local = host in ("127.0.0.1", "localhost", "::1")
    names = ["127.0.0.1", "localhost", "[::1]"] if local else [f"[{host}]" if ":" in host else host]
    hosts = [f"{n}:{port}" for n in names] + list(extra_hosts)
    origins = [f"http://{n}:{port}" for n in names] + list(extra_origins)
    return hosts, origins


def _login_server(loaded: Any, default_url: str) -> Any:
    """The OAuth login server `auth.login` asks for (its store beside the audit log by default)."""
    from ..auth.login import LoginServer

    cfg = loaded.settings.auth.login
    project = loaded.project
    store = project.project_dir / cfg.store if cfg.store else project.log_path / "mxcp_oauth.sqlite"
    return LoginServer(cfg, cfg.base_url or default_url, store, loaded.settings.server.name or "dbt-mxcp")


async def serve_http(adapter: McpAdapter, live: LiveProject, *, host: str, port: int, stateless: bool,
                     interval: float, json_response: bool = False, allowed_hosts: Sequence[str] = (),
                     allowed_origins: Sequence[str] = ()) -> None:
    """Serve MCP at http://HOST:PORT/mcp, with /healthz, /readyz (and /metrics), until SIGINT/SIGTERM.

    Host and Origin headers are checked against an allowlist (DNS rebinding); on SIGTERM the
    server stops accepting, lets in-flight calls finish, then exits.
    """
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ..telemetry import CONTENT_TYPE

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        served = live.current
        audit_error = live.auditor.last_error if live.auditor is not None and not live.auditor.healthy else None
        status = "draining" if adapter.draining else "audit_failing" if audit_error else "ready"
        body = {"status": status, "generation": served.generation, "endpoints": sum(1 for _ in served.registry.all()),
                "reload_error": live.last_error, "audit_error": audit_error}
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    adapter.transport = "http"

    from ..auth.middleware import Authenticator, AuthMiddleware, LiveAuthenticator

    hosts, origins = _allowed(host, port, allowed_hosts, allowed_origins)
    loaded = live.current.loaded
    settings = loaded.settings.auth
    shown = f"[{host}]" if ":" in host else host
    login = _login_server(loaded, f"http://{shown}:{port}") if settings.type == "login" else None
    authenticator = Authenticator(settings, login) if settings.type != "none" else None
    metadata = authenticator.metadata() if authenticator is not None else None
    public = login.base_url if login is not None else f"http://{shown}:{port}"
    metadata_url = f"{public}/.well-known/oauth-protected-resource/mcp" if metadata else None

    async def protected_resource(request: Request) -> JSONResponse:
        return JSONResponse(metadata)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
    registry = live.telemetry.metrics if live.telemetry is not None else None
    if registry is not None:
        async def metrics(request: Request) -> Response:
            failures = live.auditor.failures if live.auditor is not None else None
            return Response(registry.render(failures), media_type=CONTENT_TYPE)

        routes.append(Route("/metrics", metrics))  # unauthenticated, like /healthz: counts and endpoint names only
    if login is not None:
        routes += login.routes()
    if metadata is not None:  # RFC 9728, at the path-inserted and the plain well-known URL
        routes += [Route("/.well-known/oauth-protected-resource/mcp", protected_resource),
                   Route("/.well-known/oauth-protected-resource", protected_resource)]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=origins)
    app = adapter.server.streamable_http_app(
        host=host, stateless_http=stateless, json_response=json_response, transport_security=security,
        custom_starlette_routes=routes,
    )
    current = LiveAuthenticator(lambda: live.current.loaded.settings.auth, login)
    asgi: Any = AuthMiddleware(app, current, metadata_url) if authenticator is not None else app
    # log_config=None: uvicorn's warnings go through our handler (text or JSON lines) like ours.
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", lifespan="on", log_config=None,
                            timeout_graceful_shutdown=int(SHUTDOWN_GRACE))
    server = _uvicorn_server_class()(config)
    log.info("serving MCP at http://%s:%d/mcp", host if ":" not in host else f"[{host}]", port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, adapter, live, interval)
        tg.start_soon(_on_hangup, adapter, live)
        tg.start_soon(_on_signal, adapter, lambda: setattr(server, "should_exit", True))
        await server.serve()
        tg.cancel_scope.cancel()
