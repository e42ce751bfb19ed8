"""Audit records: who called what, with which arguments (sensitive ones as a salted HMAC), what the
policies decided, and how it ended. Result data is recorded only when `audit.results` asks for it."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..jsonvalues import dumps, to_json_value
from ..policy import Decision, edit_paths
from ..registry import Endpoint
from ..types import quoted

MAX_VALUE_CHARS = 1024  # longer argument values are cut in the record (the length is kept)
MAX_RESULT_ROWS = 100  # rows of a result kept in its record
MAX_ITEMS = 100  # items of a list argument (and keys of an object one, and undeclared keys) kept in a record


def redact(value: Any, key: bytes) -> str:
    """A sensitive value as ``hmac-sha256:<hex>``: equal values correlate, the value never appears."""
    # surrogatepass: a lone surrogate (from bytes that were not UTF-8, e.g. a CLI argument) still hashes.
    digest = hmac.new(key, dumps(to_json_value(value)).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


def _shorten(value: Any, items: int | None = None) -> Any:
    """`value` with long strings cut and, given `items`, lists and objects cut to that many entries (the
    counts kept), so that a record stays small whatever a caller sends."""
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + f"... [{len(value)} characters]"
    if isinstance(value, list):
        kept = [_shorten(v, items) for v in value[:items]]
        return [*kept, f"... [{len(value)} items]"] if len(kept) < len(value) else kept
    if isinstance(value, dict):
        out = {k: _shorten(v, items) for k, v in itertools.islice(value.items(), items)}
        if len(out) < len(value):
            out["..."] = f"[{len(value)} keys]"
        return out
    return value


def recorded_arguments(endpoint: Endpoint, arguments: Mapping[str, Any], key: bytes) -> tuple[dict[str, Any],
                                                                                                   list[str]]:
    """The arguments as recorded, and the raw text of every value that was redacted.

    Sensitive parameters and keys the endpoint does not declare (whose sensitivity is unknown) are
    redacted; everything else is recorded as sent (long strings cut).
    """
    declared = {p.name: p for p in endpoint.parameters}
    out: dict[str, Any] = {}
    hidden: list[str] = []
    undeclared = 0
    for name, value in arguments.items():
        param = declared.get(str(name))
        if param is None:
            undeclared += 1
            if undeclared > MAX_ITEMS:
                continue  # such a call is refused, and its error names these keys, never their values
        if param is None or param.sensitive:
            out[str(name)] = redact(value, key)
            hidden += [str(v) for v in (value if isinstance(value, list) else [value]) if v not in (None, "")]
        else:
            out[str(name)] = _shorten(to_json_value(value), MAX_ITEMS)
    if undeclared > MAX_ITEMS:
        out["..."] = f"[{undeclared - MAX_ITEMS} more undeclared keys]"
    return out, list(dict.fromkeys(hidden))


def recorded_result(endpoint: Endpoint, value: Any, key: bytes) -> Any:
    """A result as recorded: sensitive fields as HMAC, long strings cut, at most MAX_RESULT_ROWS rows."""
    value = json.loads(dumps(to_json_value(value)))  # plain JSON types (decimals as numbers) for any sink
    if isinstance(value, list) and len(value) > MAX_RESULT_ROWS:
        value = [*value[:MAX_RESULT_ROWS], f"... [{len(value)} rows]"]

    def hide(obj: dict[str, Any], field: str) -> None:
        if obj.get(field) is not None:
            obj[field] = redact(obj[field], key)

    return _shorten(edit_paths(value, endpoint.sensitive_paths, hide))


def scrub(text: str, hidden: Sequence[str]) -> str:
    """`text` (an error message) with every redacted value taken out: as written, and as an argument
    error quotes it (its repr, cut short when long: "got 'abc...")."""
    for value in sorted(hidden, key=len, reverse=True):
        if len(value) >= 2:
            text = text.replace(value, "[redacted]").replace(quoted(value), "'[redacted]'")
    return text


def make_record(*, endpoint: Endpoint, arguments: Mapping[str, Any], user: Mapping[str, Any], transport: str,
                status: str, decisions: Sequence[Decision], duration_ms: float, key: bytes,
                rows: int | None = None, affected_rows: int | None = None, truncated: bool = False,
                error: str | None = None, trace_id: str | None = None, result: Any = None,
                with_result: bool = False) -> dict[str, Any]:
    """One call's audit record (with the result delivered when `with_result`)."""
    recorded, hidden = recorded_arguments(endpoint, arguments, key)
    record = {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "trace_id": trace_id or uuid.uuid4().hex,
        "transport": transport,
        "caller": {k: user.get(k) for k in ("id", "email", "name", "role", "groups")},
        "endpoint": {"kind": endpoint.kind, "name": endpoint.name, "node": endpoint.node_id},
        "arguments": recorded,
        "decisions": [{"phase": d.phase, "index": d.index, "action": d.action, "matched": d.matched,
                       "error": scrub(d.error, hidden) if d.error else None} for d in decisions],
        "status": status,
        "rows": rows,
        "affected_rows": affected_rows,
        "truncated": truncated,
        "duration_ms": round(duration_ms, 3),
        "error": _shorten(scrub(error, hidden)) if error else None,
    }
    if with_result:
        record["result"] = recorded_result(endpoint, result, key)
    return record
