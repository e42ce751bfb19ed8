"""The auditor: builds each call's record and writes it before the call is answered.

Strict (the default): a call whose record cannot be written fails with an audit error, and the
server reports itself not ready until a write succeeds again (Vault's rule). Not strict: the call
is answered and the lost record is counted and logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import CallError, ConfigError
from ..policy import Decision
from ..registry import Endpoint
from .jsonl import AuditWriteError, JsonlSink
from .records import make_record

log = logging.getLogger("dbt_mxcp.audit")
KEY_FILE = "mxcp_audit.key"


def load_key(configured: str | None, log_dir: Path) -> bytes:
    """The HMAC key for sensitive values: the configured one, else a random key kept beside the log (0600)."""
    if configured:
        return configured.encode("utf-8")
    path = log_dir / KEY_FILE
    if not path.exists():
        log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


class Sink(Protocol):
    """Where records go: the JSONL file, the DuckDB file or the Postgres table."""

    def write(self, record: dict[str, Any]) -> dict[str, Any]: ...

    def lines(self) -> Iterator[tuple[Any, int, str]]: ...

    def close(self) -> None: ...


class Auditor:
    """Writes one record per call to its sink."""

    def __init__(self, sink: Sink, key: bytes, *, strict: bool = True, results: bool = False) -> None:
        self.sink = sink
        self.key = key
        self.strict = strict
        self.results = results  # record what answered calls returned
        self.healthy = True
        self.last_error: str | None = None
        self.lost = 0
        self.failures = 0  # failed writes, refused calls included (for mxcp_audit_write_failures_total)

    def record(self, *, endpoint: Endpoint, arguments: Mapping[str, Any], user: Mapping[str, Any], transport: str,
               status: str, decisions: Sequence[Decision], duration_ms: float, **details: Any) -> None:
        """Write the record of one call; in strict mode a failed write fails the call."""
        record = make_record(endpoint=endpoint, arguments=arguments, user=user, transport=transport, status=status,
                             decisions=decisions, duration_ms=duration_ms, key=self.key,
                             with_result=self.results and status == "ok", **details)
        try:
            self.sink.write(record)
        except AuditWriteError as exc:
            self.failures += 1
            self.healthy = False
            self.last_error = str(exc)
            log.error("audit write failed (%s): %s", "call refused" if self.strict else "record lost", exc)
            if self.strict:
                raise CallError("audit_error", "the call was not answered because its audit record could not "
                                               "be written; the server operator has been told") from None
            self.lost += 1
            return
        self.healthy = True
        self.last_error = None

    def close(self) -> None:
        """Flush and close the sink."""
        self.sink.close()


def make_sink(cfg: Any, log_path: Path, project_dir: Path) -> tuple[Sink, Path]:
    """The sink `audit` settings ask for, and the folder for the HMAC key file."""
    if cfg.sink == "postgres":
        from .postgres import PostgresSink

        return PostgresSink(cfg.postgres_dsn, cfg.table), log_path
    if cfg.sink == "duckdb":
        from .duckdb_sink import DuckDbSink

        path = project_dir / cfg.path if cfg.path else log_path / "mxcp_audit.duckdb"
        return DuckDbSink(path, cfg.table), path.parent
    path = project_dir / cfg.path if cfg.path else log_path / "mxcp_audit.jsonl"
    return JsonlSink(path, fsync=cfg.fsync, interval=cfg.fsync_interval, max_bytes=cfg.max_bytes,
                     backups=cfg.backups), path.parent


def make_auditor(settings: Any, log_path: Path, project_dir: Path) -> Auditor | None:
    """The auditor `mxcp.yml` asks for (None when audit is off); a relative path is the project's."""
    cfg = settings.audit
    if not cfg.enabled:
        return None
    sink, key_dir = make_sink(cfg, log_path, project_dir)
    try:
        key = load_key(cfg.hmac_key, key_dir)
    except OSError as exc:
        raise ConfigError(f"cannot create the audit key in {key_dir}: {exc.strerror}; make the folder "
                          "writable or set audit.hmac_key in mxcp.yml") from None
    if cfg.sink == "duckdb":
        from .duckdb_sink import AuditFileBusy, DuckDbSink

        assert isinstance(sink, DuckDbSink)
        try:
            sink.open()  # a second writer of the file is refused at start, not call by call
        except AuditFileBusy as exc:
            raise ConfigError(str(exc)) from None
        except AuditWriteError:
            pass  # e.g. an unwritable folder: each call reports it (and fails, when strict)
    return Auditor(sink, key, strict=cfg.strict, results=cfg.results)
