"""Warehouse values as JSON: dates as ISO 8601, decimals as exact JSON numbers, NULL as null."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any


def to_json_value(value: Any) -> Any:
    """A DuckDB value as a JSON-ready Python value. Decimals stay Decimal, written exactly by `dumps`."""
    if value is None or isinstance(value, bool | int | str | Decimal):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        return value.isoformat()  # naive: no offset; TIMESTAMPTZ: with its offset
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _duration(value: dt.timedelta) -> str:
    """An ISO 8601 duration with exact (microsecond) seconds, e.g. ``P1DT2H3M4.5S``."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    second_text = f"{seconds}.{value.microseconds:06d}".rstrip("0") if value.microseconds else str(seconds)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or value.microseconds:
        clock += f"{second_text}S"
    text = (f"{value.days}D" if value.days else "") + (f"T{clock}" if clock else "")
    return f"{sign}P{text or 'T0S'}"


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON text for `value`; Decimal is written as its exact digits, never rounded through float."""
    parts: list[str] = []
    _write(value, parts, indent, 0)
    return "".join(parts)


def _write(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            out.append("null")
        else:
            text = format(value, "f")
            out.append(text)
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            out.append(("," if i else "") + _newline(indent, level + 1))
            out.append(json.dumps(str(k), ensure_ascii=False) + (": " if indent is not None else ":"))
            _write(v, out, indent, level + 1)
        out.append(_newline(indent, level) + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(value):
            out.append(("," if i else "") + _newline(indent, level + 1))
            _write(v, out, indent, level + 1)
        out.append(_newline(indent, level) + "]")
    else:
        out.append(json.dumps(to_json_value(value), ensure_ascii=False, allow_nan=False))


def _newline(indent: int | None, level: int) -> str:
    return "" if indent is None else "\n" + " " * (indent * level)
