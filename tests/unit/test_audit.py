"""The audit log on real files: hash chain, tamper detection, torn writes, rotation, permissions,
redaction of sensitive values, and the `log` filters."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbt_mxcp.audit.auditor import Auditor, load_key
from dbt_mxcp.audit.jsonl import JsonlSink, iter_records, log_files, verify
from dbt_mxcp.audit.query import Filters, parse_since
from dbt_mxcp.audit.records import make_record
from dbt_mxcp.endpoints import ToolSpec
from dbt_mxcp.errors import CallError, ConfigError
from dbt_mxcp.policy import Decision
from dbt_mxcp.registry import Endpoint


def _write(sink: JsonlSink, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        sink.write({"time": f"2026-01-01T00:00:{i % 60:02d}.000000Z", "status": "ok", "n": i})


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_chain_verifies_and_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    sink = JsonlSink(path, fsync="every")
    _write(sink, 5)
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = [json.loads(line) for line in _lines(path)]
    assert [r["n"] for r in records] == list(range(5))
    assert records[0]["prev_hash"] == ""
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    body = {k: v for k, v in records[2].items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert records[2]["hash"] == expected  # computed independently of the module
    result = verify(path)
    assert result.ok and result.records == 5 and not result.torn


@pytest.mark.parametrize("tamper", ["edit", "remove", "reorder"])
def test_tampering_breaks_the_chain(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    _write(sink, 4)
    sink.close()
    lines = _lines(path)
    if tamper == "edit":
        lines[1] = lines[1].replace('"status":"ok"', '"status":"denied"')
    elif tamper == "remove":
        del lines[2]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    assert not verify(path).ok


def test_a_torn_write_is_reported_and_the_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path)
    _write(sink, 2)
    sink.close()
    with path.open("a") as fh:
        fh.write('{"time": "2026-01-01T00:00:09.0Z", "sta')  # a crash in the middle of a write
    sink = JsonlSink(path)
    _write(sink, 2, start=2)
    sink.close()
    result = verify(path)
    assert result.ok and result.records == 4 and len(result.torn) == 1
    assert [r["n"] for r in iter_records(path)] == [0, 1, 2, 3]


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink(path, max_bytes=1000, backups=50)
    _write(sink, 30)
    sink.close()
    assert len(log_files(path)) > 2
    assert all(f.stat().st_size <= 1000 for f in log_files(path))
    assert [r["n"] for r in iter_records(path)] == list(range(30))
    assert verify(path).ok


def _endpoint() -> Endpoint:
    spec = ToolSpec.model_validate({"name": "lookup", "parameters": [
        {"name": "email", "type": "string", "sensitive": True}, {"name": "limit", "type": "integer"}],
        "source": {"code": "select $email, $limit"}})
    return Endpoint(kind="tool", name="lookup", spec=spec, node_id="model.p.m", node_type="model",
                    yml_path="m.yml", source_kind="code", sql="select 1", parameters=tuple(spec.parameters),
                    declared_return=None, relations=())


def test_sensitive_and_undeclared_arguments_are_hmac_only() -> None:
    key = b"k" * 32
    canary = "canary-7f3a9c@example.com"
    record = make_record(endpoint=_endpoint(), arguments={"email": canary, "limit": 5, "extra": "another-canary-9b"},
                         user={"role": "anonymous"}, transport="cli", status="invalid_arguments",
                         decisions=[Decision("input", 0, "deny", None, f"no match for {canary}")], duration_ms=1.0,
                         key=key, error=f"'email' must be shorter, got '{canary}'")
    text = json.dumps(record)
    assert canary not in text and "another-canary-9b" not in text
    expected = hmac.new(key, json.dumps(canary).encode(), hashlib.sha256).hexdigest()
    assert record["arguments"]["email"] == f"hmac-sha256:{expected}"  # equal values correlate across records
    assert record["arguments"]["limit"] == 5
    assert record["error"] == "'email' must be shorter, got '[redacted]'"


def test_results_are_recorded_only_when_asked_and_sensitive_fields_as_hmac() -> None:
    key = b"k" * 32
    rows = [{"id": i, "email": f"person{i}@example.com", "contact": {"phone": f"555-{i:04d}", "city": "Oslo"}}
            for i in range(150)]
    paths = ("email", "contact.phone")
    endpoint = replace(_endpoint(), derive=lambda: (None, paths))
    common: dict[str, Any] = {"endpoint": endpoint, "arguments": {"limit": 1}, "user": {}, "transport": "cli",
                              "status": "ok", "decisions": [], "duration_ms": 1.0, "key": key, "result": rows}
    assert "result" not in make_record(**common)
    recorded = make_record(**common, with_result=True)["result"]
    assert "person3@example.com" not in json.dumps(recorded) and "555-0003" not in json.dumps(recorded)
    digest = hmac.new(key, json.dumps("person3@example.com").encode(), hashlib.sha256).hexdigest()
    assert recorded[3] == {"id": 3, "email": f"hmac-sha256:{digest}",
                           "contact": {"phone": recorded[3]["contact"]["phone"], "city": "Oslo"}}
    assert recorded[3]["contact"]["phone"].startswith("hmac-sha256:")
    assert len(recorded) == 101 and recorded[-1] == "... [150 rows]"  # at most 100 rows, and how many there were
    assert rows[3]["email"] == "person3@example.com"  # the caller's result is not touched


def test_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_key(None, tmp_path)
    assert load_key(None, tmp_path) == first and len(first) == 64
    assert stat.S_IMODE((tmp_path / "mxcp_audit.key").stat().st_mode) == 0o600
    assert load_key("configured", tmp_path) == b"configured"


def test_strict_auditor_refuses_the_call_when_the_record_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log folder should be")
    strict = Auditor(JsonlSink(blocker / "audit.jsonl"), b"k", strict=True)
    args: dict[str, Any] = {"endpoint": _endpoint(), "arguments": {"limit": 1}, "user": {}, "transport": "cli",
                            "status": "ok", "decisions": [], "duration_ms": 1.0}
    with pytest.raises(CallError) as info:
        strict.record(**args)
    assert info.value.kind == "audit_error" and not strict.healthy
    lenient = Auditor(JsonlSink(blocker / "audit.jsonl"), b"k", strict=False)
    lenient.record(**args)  # answered; the loss is counted
    assert lenient.lost == 1


def test_filters() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-25T09:00:00", now) == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="30m"):
        parse_since("yesterday", now)
    record = {"time": "2026-11-25T11:00:00.000000Z", "status": "denied", "caller": {"id": "ann"},
              "endpoint": {"name": "salary_band"}, "decisions": [{"action": "deny", "matched": True, "error": None}]}
    assert Filters(since=now - timedelta(hours=2), endpoint="salary_band", user="ann", status="denied",
                   decision="deny").keep(record)
    assert not Filters(since=now - timedelta(minutes=30)).keep(record)
    assert not Filters(decision="policy_error").keep(record)
    assert not Filters(user="bob").keep(record)
