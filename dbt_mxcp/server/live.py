"""The served state — registry, pipeline, warehouse snapshot — and its reload while dbt rebuilds.

A reload builds a new state beside the old one and swaps a single reference; a call holds the
state it started with until it finishes, and an old snapshot is closed once its last call is done.
A manifest that does not load, or endpoints with problems, keep the old state (and say why).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..audit.auditor import Auditor, make_auditor
from ..errors import MxcpError, RegistryError
from ..load import Loaded, load
from ..pipeline import Pipeline
from ..project import DuckDbConfig, Flags
from ..ratelimit import RateLimiter
from ..registry import Registry
from ..settings import SETTINGS_FILE, settings_path
from ..telemetry import Telemetry, from_settings
from ..warehouse import Warehouse, open_warehouse
from ..writes import WriteDatabase, publisher
from .snapshot import SNAPSHOT_DIR, Busy, Version, locked_by_other, prune, publish, version_of

log = logging.getLogger("dbt_mxcp.server")


@dataclass(eq=False)
class Served:
    """One generation of what the server answers from."""

    generation: int
    loaded: Loaded
    pipeline: Pipeline
    warehouse: Warehouse | None
    snapshot: Path | None
    warehouse_version: Version | None
    watched: dict[Path, tuple[int, int] | None]
    in_flight: int = 0
    retired: bool = False
    owns_warehouse: bool = True  # False once a newer generation took the same open snapshot over
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def registry(self) -> Registry:
        return self.loaded.registry


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


class LiveProject:
    """Loads a dbt project for serving and reloads it when dbt or the endpoint files change."""

    def __init__(self, flags: Flags, *, lock_wait: float = 10.0) -> None:
        self.flags = flags
        self.lock_wait = lock_wait
        self._current: Served | None = None
        self._swap = threading.Lock()
        self._rejected: dict[Path, tuple[int, int] | None] | None = None
        self.last_error: str | None = None
        self.writes: WriteDatabase | None = None
        self.auditor: Auditor | None = None
        self.rate_limiter: RateLimiter | None = None
        self.telemetry: Telemetry | None = None  # from the settings at start (a reload keeps it)
        self._stop_publisher = threading.Event()

    # -- access ------------------------------------------------------------------------------------

    @property
    def current(self) -> Served:
        """The state new calls use."""
        if self._current is None:
            raise RuntimeError("the project is not loaded yet")
        return self._current

    @contextmanager
    def use(self) -> Iterator[Served]:
        """Hold the current state for one call; a retired state closes after its last call."""
        with self._swap:
            served = self.current
            with served.lock:
                served.in_flight += 1
        try:
            yield served
        finally:
            with served.lock:
                served.in_flight -= 1
                close = served.retired and served.in_flight == 0
            if close:
                self._close(served)

    # -- loading -----------------------------------------------------------------------------------

    def start(self) -> Served:
        """Load for the first time; a configuration or declaration problem is raised."""
        served = self._build(generation=1, previous=None, wait=True)
        project = served.loaded.project
        self.auditor = make_auditor(served.loaded.settings, project.log_path, project.project_dir)
        served.pipeline.auditor = self.auditor
        self.telemetry = from_settings(served.loaded.settings)
        served.pipeline.telemetry = self.telemetry
        self.rate_limiter = RateLimiter(served.loaded.settings.rate_limits)
        served.pipeline.rate_limiter = self.rate_limiter
        writes = served.loaded.settings.writes
        if writes.enabled:
            self.writes = WriteDatabase.from_settings(writes, served.loaded.project.project_dir)
            served.pipeline.writes = self.writes
            threading.Thread(target=publisher, args=(self.writes, 1.0, self._stop_publisher), daemon=True,
                             name="dbt-mxcp-writes-publisher").start()
        self._current = served
        return served

    def reload_if_changed(self, force: bool = False) -> bool:
        """Reload when the manifest, the warehouse, mxcp.yml or an endpoint SQL file changed (or when
        `force`d, as SIGHUP does: secrets behind settings may change without any file changing);
        True on a swap."""
        old = self.current
        stamps = {p: _stamp(p) for p in old.watched}
        if not force and stamps == old.watched:
            return False
        if not force and stamps == self._rejected:
            return False  # already refused this exact state; wait for the next change
        config = old.loaded.warehouse
        if isinstance(config, DuckDbConfig) and locked_by_other(Path(config.path)):
            return False  # dbt is still at work: reload once it has finished
        try:
            new = self._build(generation=old.generation + 1, previous=old, wait=False)
        except Busy:
            return False  # dbt is writing the warehouse: try again on the next tick
        except MxcpError as exc:
            self._rejected = stamps
            self.last_error = str(exc)
            log.warning("keeping the previous endpoints: %s", exc)
            return False
        self._rejected = None
        self.last_error = None
        rate_limits = new.loaded.settings.rate_limits
        if rate_limits != old.loaded.settings.rate_limits:
            self.rate_limiter = RateLimiter(rate_limits)  # new limits start with full buckets
            new.pipeline.rate_limiter = self.rate_limiter
        with self._swap:
            self._current = new
        self._retire(old)
        log.info("reloaded: generation %d, %d endpoint(s)", new.generation, len(new.registry.endpoints))
        return True

    def close(self) -> None:
        """Close the current state's warehouse, and publish and close the writes database."""
        self._stop_publisher.set()
        if self.writes is not None:
            self.writes.close()
        if self.auditor is not None:
            self.auditor.close()
        if self.telemetry is not None:
            self.telemetry.close()
        if self._current is not None:
            self._retire(self._current)

    def _retire(self, served: Served) -> None:
        with served.lock:
            served.retired = True
            close = served.in_flight == 0
        if close:
            self._close(served)

    @staticmethod
    def _close(served: Served) -> None:
        if served.owns_warehouse and served.warehouse is not None:
            served.warehouse.close()

    def _watch_list(self, loaded: Loaded) -> list[Path]:
        target = loaded.project.target_path
        paths = [target / "manifest.json", target / "mxcp_registry.json", loaded.project.project_dir / SETTINGS_FILE]
        try:
            in_use = settings_path(loaded.project.project_dir)  # ~/.dbt/mxcp.yml or $DBT_MXCP_SETTINGS
        except MxcpError:
            in_use = None  # the next load says why
        if in_use is not None and in_use not in paths:
            paths.append(in_use)
        if isinstance(loaded.warehouse, DuckDbConfig) and loaded.warehouse.path != ":memory:":
            paths.append(Path(loaded.warehouse.path))
        root = loaded.project.project_dir
        paths += [root / e.source_file for e in loaded.registry.all(include_disabled=True) if e.source_file]
        return paths

    def _build(self, generation: int, previous: Served | None, wait: bool) -> Served:
        # Stamp what we know of before loading: a file that changes while we load is reloaded next tick.
        watched = {p: _stamp(p) for p in (self._watch_list(previous.loaded) if previous else [])}
        loaded = load(self.flags, freeze=False)
        watched.update({p: _stamp(p) for p in self._watch_list(loaded) if p not in watched})
        if loaded.problems:
            raise RegistryError(loaded.problems)
        config = loaded.require_warehouse()
        snapshot: Path | None = None
        version: Version | None = None
        if not isinstance(config, DuckDbConfig):
            # A Postgres warehouse is shared and transactional, so no snapshot: calls read it live,
            # and the connections are kept while the target's settings stay the same.
            if previous is not None and previous.warehouse is not None and previous.loaded.warehouse == config:
                warehouse = previous.warehouse
                previous.owns_warehouse = False
            else:
                warehouse = open_warehouse(config, lock_wait=self.lock_wait)
                warehouse.open()
        else:
            source = Path(config.path)
            version = version_of(source) if source.is_file() else None
            if previous is not None and previous.warehouse is not None and previous.snapshot is not None \
                    and previous.warehouse_version == version:
                # Same data (e.g. only yml or SQL files changed): keep the open snapshot.
                snapshot, warehouse = previous.snapshot, previous.warehouse
                previous.owns_warehouse = False
            else:
                snapshot = self._publish(source, loaded.project.target_path / SNAPSHOT_DIR, wait)
                warehouse = open_warehouse(dataclasses.replace(config, path=str(snapshot)), lock_wait=self.lock_wait)
                warehouse.open()  # fail now, not on the first call
            keep = {snapshot} | ({previous.snapshot} if previous is not None and previous.snapshot else set())
            prune(loaded.project.target_path / SNAPSHOT_DIR, keep)
        pipeline = Pipeline(loaded.registry, warehouse, loaded.settings.engine_limits(), loaded.settings,
                            self.writes, self.auditor, self.rate_limiter, self.telemetry)
        return Served(generation, loaded, pipeline, warehouse, snapshot, version, watched)

    def _publish(self, source: Path, root: Path, wait: bool) -> Path:
        import time

        if not source.is_file():
            raise MxcpError(f"warehouse file {source} does not exist: run `dbt build` first")
        deadline = time.monotonic() + (self.lock_wait if wait else 0)
        announced = False
        while True:
            try:
                return publish(source, root)[0]
            except Busy:
                if time.monotonic() >= deadline:
                    if wait:
                        raise MxcpError(f"warehouse {source} stayed busy for {self.lock_wait:g} s (a dbt command "
                                        "is writing it); start the server when it has finished") from None
                    raise
                if not announced:
                    log.info("waiting for dbt to finish with %s", source)
                    announced = True
                time.sleep(0.2)
