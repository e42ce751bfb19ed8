"""Printing as dbt does: ``HH:MM:SS  message`` lines, colours on a terminal, JSON for machines."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from ..jsonvalues import dumps

COLOURS = {"ok": "green", "error": "red", "warning": "yellow", "info": None}


def line(message: str, status: str = "info", *, err: bool = False) -> None:
    """One dbt-style log line."""
    stamp = datetime.now().strftime("%H:%M:%S")
    colour = COLOURS.get(status)
    text = click.style(message, fg=colour) if colour else message
    click.echo(f"{stamp}  {text}", err=err)


def emit_json(value: Any) -> None:
    """JSON on stdout: pretty on a terminal, one line when piped."""
    click.echo(dumps(value, indent=2 if sys.stdout.isatty() else None))


def table(rows: list[list[str]], headers: list[str]) -> None:
    """A plain aligned table."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, ["-" * w for w in widths], *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
