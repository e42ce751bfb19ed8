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
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    text = f"{sign}P{int(days)}DT{rest:g}S" if days else f"{sign}PT{rest:g}S"
    return text


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
