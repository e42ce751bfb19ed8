"""Printing as dbt does: ``HH:MM:SS  message`` lines, colours on a terminal, JSON for machines,
GitHub Actions annotations for CI."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
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


def github_annotation(level: str, message: str, *, project_dir: Path, file: str | None = None,
                      line_number: int | None = None, title: str | None = None) -> str:
    """A GitHub Actions workflow command, escaped: ``::error file=…,line=…,title=…::message``.

    `file` is relative to `project_dir`; GitHub places annotations by path from the repository
    root (the workspace), so it is given from there.
    """
    props = []
    if file:
        path = (project_dir / file).resolve()
        base = Path(os.environ.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
        props.append(f"file={_property(str(path.relative_to(base)) if path.is_relative_to(base) else file)}")
    if line_number:
        props.append(f"line={line_number}")
    if title:
        props.append(f"title={_property(title)}")
    return f"::{level}{' ' + ','.join(props) if props else ''}::{_data(message)}"


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
