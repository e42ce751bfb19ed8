"""The `dbt-mxcp` command line. Exit codes as dbt: 0 ok, 1 a failure of what was checked, 2 usage/config."""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import __version__
from ..errors import CallError, ConfigError, MxcpError, RegistryError
from ..project import Flags
from .output import emit_json, line, table

F = Callable[..., Any]


def dbt_flags(func: F) -> F:
    """dbt's project flags, each with its DBT_* env var."""
    options = [
        click.option("--project-dir", envvar="DBT_PROJECT_DIR", help="dbt project folder (default: nearest "
                     "dbt_project.yml upwards)."),
        click.option("--profiles-dir", envvar="DBT_PROFILES_DIR", help="Folder holding profiles.yml."),
        click.option("--profile", envvar="DBT_PROFILE", help="Profile to use instead of the project's."),
        click.option("--target", "-t", envvar="DBT_TARGET", help="Profile target to use."),
        click.option("--target-path", envvar="DBT_TARGET_PATH", help="Where dbt wrote its artifacts."),
        click.option("--vars", "vars_", help="YAML/JSON mapping of dbt vars, as for dbt."),
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, project_dir: str | None, profiles_dir: str | None, profile: str | None,
                target: str | None, target_path: str | None, vars_: str | None, **kwargs: Any) -> Any:
        flags = Flags(project_dir, profiles_dir, profile, target, target_path, vars_)
        return func(*args, flags=flags, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def lock_wait_option(func: F) -> F:
    """How long to wait for a dbt process that holds the warehouse's write lock."""
    return click.option("--lock-wait", type=click.FloatRange(min=0), default=10.0, show_default=True,
                        envvar="DBT_MXCP_LOCK_WAIT", metavar="SECONDS",
                        help="Wait this long for a running dbt command to release the warehouse.")(func)


def handle_errors(func: F) -> F:
    """Turn dbt-mxcp errors into a clear message and dbt's exit codes; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MxcpError as exc:
            line(f"Error: {exc}", "error", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException:
            raise  # usage errors: click prints them with the usage line (exit 2)
        except BrokenPipeError:
            # The reader left (`dbt-mxcp list | head`): not an error to report. Point stdout at
            # /dev/null so the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:
            if os.environ.get("DBT_MXCP_DEBUG"):
                raise
            line(f"Internal error: {type(exc).__name__}: {exc}. This is a bug in dbt-mxcp; please report it "
                 "(DBT_MXCP_DEBUG=1 shows the traceback).", "error", err=True)
            sys.exit(2)
        finally:
            # What the command built lives until exit: keep it out of the interpreter's last
            # collections (about 0.4 s for a 5,000-model project).
            gc.freeze()

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbt-mxcp")
def main() -> None:
    """Serve a dbt project's tools, resources and prompts over MCP."""


@main.command("list")
@dbt_flags
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def list_command(flags: Flags, output: str) -> None:
    """List the project's endpoints: kind, name, host node and where the SQL comes from."""
    from ..load import load

    loaded = load(flags)
    endpoints = list(loaded.registry.all(include_disabled=True))
    if output == "json":
        emit_json([{"kind": e.kind, "name": e.name, "enabled": e.enabled, "node": e.node_id,
                    "resource_type": e.node_type, "source_kind": e.source_kind or None, "yml_path": e.yml_path,
                    "description": e.description} for e in endpoints])
    else:
        rows = [[e.kind, e.name + ("" if e.enabled else " (disabled)"), e.node_id, e.source_kind or "-"]
                for e in endpoints]
        table(rows, ["kind", "name", "node", "source"])
    if loaded.problems:
        raise RegistryError(loaded.problems)


@main.command()
@dbt_flags
@click.option("--no-warehouse", is_flag=True, help="Check declarations only; do not connect to DuckDB.")
@lock_wait_option
@handle_errors
def validate(flags: Flags, no_warehouse: bool, lock_wait: float) -> None:
    """Check every endpoint: declarations, policies, SQL and result columns against the warehouse."""
    from ..load import load
    from ..validate import check_warehouse, stale_artifacts

    loaded = load(flags)
    errors = 0
    for finding in stale_artifacts(loaded):
        line(f"Warning: {finding.where}: {finding.message}", "warning")
    for problem in loaded.problems:
        line(f"Error: {problem}", "error")
        errors += 1
    if not no_warehouse:
        for finding in check_warehouse(loaded, lock_wait=lock_wait):
            line(f"{finding.level.capitalize()}: {finding.where}: {finding.message}", finding.level)
            errors += finding.level == "error"
    count = sum(1 for _ in loaded.registry.all())
    if errors:
        line(f"Validation failed: {errors} error(s) in {count} endpoint(s)", "error")
        sys.exit(1)
    line(f"Validated {count} endpoint(s): all OK", "ok")


@main.command()
@click.argument("kind", type=click.Choice(["tool", "resource", "prompt"]))
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="An argument, converted by the parameter's declared type (JSON for arrays/objects).")
@click.option("--user", "user_json", metavar="JSON", help="Caller identity, e.g. '{\"groups\": [\"support\"]}'.")
@dbt_flags
@lock_wait_option
@handle_errors
def run(kind: str, name: str, params: tuple[str, ...], user_json: str | None, flags: Flags, lock_wait: float) -> None:
    """Call one endpoint through the same pipeline a served call takes; print the result as JSON.

    For a resource, NAME is a concrete URI such as customers://42.
    """
    from ..load import load
    from ..pipeline import open_pipeline, parse_text_value

    user = _parse_user(user_json)
    loaded = load(flags)
    if loaded.problems:
        raise RegistryError(loaded.problems)
    with open_pipeline(loaded, lock_wait=lock_wait, warehouse=kind != "prompt") as pipeline:
        if kind == "resource":
            if params:
                raise ConfigError("a resource takes no --param: its arguments come from the URI")
            outcome = pipeline.read_resource(name, user)
        else:
            endpoint = pipeline.endpoint(kind, name)  # type: ignore[arg-type]
            declared = {p.name: p for p in endpoint.parameters}
            arguments: dict[str, Any] = {}
            for item in params:
                key, sep, text = item.partition("=")
                if not sep:
                    raise ConfigError(f"--param {item!r} must be KEY=VALUE")
                if key not in declared:
                    raise CallError("invalid_arguments", f"unknown parameter '{key}' for {kind} {name} "
                                                         f"(parameters: {', '.join(declared) or 'none'})")
                try:
                    arguments[key] = parse_text_value(declared[key], text)
                except ValueError as exc:
                    raise CallError("invalid_arguments", f"parameter '{key}' {exc}") from None
            outcome = pipeline.call(endpoint, arguments, user)
    emit_json(outcome.value)
    if outcome.truncated:
        line(f"Warning: result truncated. {outcome.note}", "warning", err=True)


@main.command()
@dbt_flags
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio for desktop clients; http for streamable HTTP at /mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="HTTP: port.")
@click.option("--stateless", is_flag=True, help="HTTP: no sessions for 2025-11-25 clients (for load balancers).")
@click.option("--json-response", is_flag=True,
              help="HTTP: answer with plain JSON instead of an event stream (faster; no progress notifications).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="HOST:PORT",
              help="HTTP: another Host header to accept (behind a proxy).")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="HTTP: another Origin to accept (browser clients).")
@click.option("--poll-interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              metavar="SECONDS", help="How often to look for a new manifest, warehouse or SQL file.")
@click.option("--print-config", "print_config", type=click.Choice(["claude", "http"]),
              help="Print the MCP client configuration for this project and exit.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Server logs on stderr: dbt-style text lines, or one JSON object a line.")
@lock_wait_option
@handle_errors
def serve(flags: Flags, transport: str, host: str, port: int, stateless: bool, json_response: bool,
          allow_hosts: tuple[str, ...],
          allow_origins: tuple[str, ...], poll_interval: float, print_config: str | None, log_format: str,
          lock_wait: float) -> None:
    """Serve the project's endpoints over MCP (stdio by default), reloading when dbt rebuilds."""
    if print_config is not None:
        from .clients import client_config

        click.echo(client_config(flags, print_config, host=host, port=port))
        return
    import logging

    import anyio

    from ..server.adapter import McpAdapter
    from ..server.live import LiveProject
    from ..server.transports import serve_http, serve_stdio
    from ..telemetry import configure_logging

    configure_logging(log_format)
    live = LiveProject(flags, lock_wait=lock_wait)
    served = live.start()
    serving = (f"Serving {sum(1 for _ in served.registry.all())} endpoint(s) of {served.loaded.project.name} "
               f"over {transport}")
    if log_format == "json":
        logging.getLogger("dbt_mxcp.server").info(serving)
    else:
        line(serving, "ok", err=True)
    adapter = McpAdapter(live)
    if transport == "stdio":
        from ..auth.middleware import stdio_caller

        adapter.stdio_user = stdio_caller(served.loaded.settings.auth)
    try:
        if transport == "stdio":
            anyio.run(serve_stdio, adapter, live, poll_interval)
        else:
            anyio.run(lambda: serve_http(adapter, live, host=host, port=port, stateless=stateless,
                                         json_response=json_response, interval=poll_interval,
                                         allowed_hosts=allow_hosts, allowed_origins=allow_origins))
    except KeyboardInterrupt:
        pass
    finally:
        live.close()


@main.command("log")
@dbt_flags
@click.option("--since", help="Only calls since a duration ago (30m, 1h, 2d) or an ISO time.")
@click.option("--endpoint", help="Only calls of this endpoint (tool or prompt name, resource URI template).")
@click.option("--user", "user_filter", help="Only calls by this caller (id, email or name).")
@click.option("--status", help="Only calls that ended so: ok, denied, policy_error, invalid_arguments, ...")
@click.option("--decision", type=click.Choice(["deny", "mask_fields", "filter_fields", "filter_sensitive_fields",
                                               "policy_error"]), help="Only calls where a policy rule did this.")
@click.option("--output", "-o", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--verify", is_flag=True, help="Check the hash chain instead; exit 1 if any record was altered.")
@click.option("--stats", is_flag=True, help="Summarise the calls per endpoint and caller instead of listing them.")
@click.option("--html", "html_path", metavar="PATH", help="Write the summary as a self-contained HTML report.")
@handle_errors
def log_command(flags: Flags, since: str | None, endpoint: str | None, user_filter: str | None, status: str | None,
                decision: str | None, output: str, verify: bool, stats: bool, html_path: str | None) -> None:
    """Query the audit log (one record per call), or verify its hash chain."""
    from ..audit.auditor import make_sink
    from ..audit.jsonl import records_of, verify_lines
    from ..audit.query import COLUMNS, Filters, flat, parse_since, select
    from ..project import load_project
    from ..settings import load_settings

    project = load_project(flags)
    cfg = load_settings(project.project_dir, flags.target, project.variables).audit
    sink, _ = make_sink(cfg, project.log_path, project.project_dir)
    path = cfg.table if cfg.sink == "postgres" else getattr(sink, "path", "")
    if verify:
        result = verify_lines(sink.lines())
        for problem in result.torn:
            line(f"Warning: {problem}: a torn record (a write cut off by a crash); the chain continues", "warning")
        for problem in result.broken:
            line(f"Error: {problem}", "error")
        if not result.ok:
            line(f"Audit log {path}: {len(result.broken)} problem(s) in {result.records} records", "error")
            sys.exit(1)
        line(f"Audit log {path}: {result.records} records, hash chain intact", "ok")
        return
    filters = Filters(parse_since(since) if since else None, endpoint, user_filter, status, decision)
    records = list(select(records_of(sink.lines()), filters))
    if stats or html_path:
        _log_stats(records, output if stats else None, html_path, str(project.name))
    elif output == "json":
        emit_json(records)
    elif output == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(COLUMNS))
        writer.writeheader()
        for record in records:
            writer.writerow(flat(record))
    else:
        rows = [[str(flat(r)[c] if flat(r)[c] is not None else "") for c in COLUMNS[:-2]] + [
            (flat(r)["error"] or "")[:60]] for r in records]
        table(rows, [*COLUMNS[:-2], "error"])


def _log_stats(records: list[dict[str, Any]], output: str | None, html_path: str | None, project: str) -> None:
    """`log --stats` (printed as `output`, unless None) and `log --html PATH`."""
    from pathlib import Path

    from ..audit.report_html import render
    from ..audit.stats import USAGE_HEADERS, compute, usage_row

    if output == "csv":
        raise ConfigError("--stats prints text or json, not csv")
    summary = compute(records)
    if html_path:
        Path(html_path).write_text(render(summary, f"dbt-mxcp usage: {project}"), encoding="utf-8")
        # stderr: stdout may be carrying the JSON stats
        line(f"Wrote a usage report of {summary.totals.calls} call(s) to {html_path}", "ok", err=True)
    if output == "json":
        emit_json(summary.to_json())
    elif output == "text":
        t = summary.totals
        if not t.calls:
            line("No calls recorded for this period and these filters")
            return
        line(f"{t.calls} call(s) from {summary.first} to {summary.last} (UTC): {t.ok} ok, {t.denied} denied, "
             f"{t.errors} error(s), {t.rows} row(s)")
        for title, usages in (("endpoint", summary.endpoints), ("caller", summary.callers)):
            click.echo()
            table([[u.name, *usage_row(u)] for u in [*usages, t]], [title, *USAGE_HEADERS])
        for title, reasons in (("Denials", summary.denials), ("Errors", summary.errors)):
            if reasons:
                click.echo(f"\n{title}:")
                for r in reasons:
                    click.echo(f"  {r.count:>6}  {r.reason}")


@main.command("api-key")
@click.option("--name", default="my-client", show_default=True, help="A label for the key (recorded as the caller id).")
def api_key(name: str) -> None:
    """Make a new API key: prints the key (give it to the client) and the entry for mxcp.yml (its hash only)."""
    from ..auth.api_keys import hash_key, new_key

    key = new_key()
    click.echo(f"key (shown once; give it to the client as 'Authorization: Bearer <key>'):\n  {key}\n")
    click.echo("mxcp.yml, under auth.api_keys:")
    click.echo(f"  - name: {name}\n    sha256: {hash_key(key)}\n    user: {{role: analyst, groups: []}}")


def _parse_user(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--user must be a JSON object: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ConfigError("--user must be a JSON object such as '{\"role\": \"admin\"}'")
    return value


from .test import test_command  # noqa: E402

main.add_command(test_command)


from .evals import evals_command  # noqa: E402

main.add_command(evals_command)


from .lint import lint_command  # noqa: E402

main.add_command(lint_command)


from .drift import drift_group  # noqa: E402

main.add_command(drift_group)


from .init import init_command  # noqa: E402

main.add_command(init_command)
