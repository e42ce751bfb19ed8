"""The warehouse endpoints read: the dbt-duckdb file or the dbt-postgres database of the profile target.

Both kinds hand out cursors with one small interface (`Cursor`), so the engine runs SQL the same
way against either; each kind enforces read-only access its own way (see its module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..project import DuckDbConfig, WarehouseConfig
from ..types import TypeDef


class Cursor(Protocol):
    """One call's access to the warehouse, used from one thread (`interrupt` from any)."""

    errors: tuple[type[BaseException], ...]  # what a failed statement raises

    def execute(self, sql: str, params: Mapping[str, Any], timeout: float | None = None,
                types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """Run `sql` with its ``$name`` parameters bound; the result columns as (name, type name).

        `timeout` is for a server-side limit (the engine interrupts a late statement itself);
        `types` are the parameters' declared types, for a database that cannot always infer them.
        """

    def fetchmany(self, size: int) -> Sequence[Sequence[Any]]:
        """Up to `size` more rows of the result."""

    def describe(self, sql: str, params: Mapping[str, Any],
                 types: Mapping[str, TypeDef | None] | None = None) -> list[tuple[str, str]]:
        """The columns `sql` would return, without returning rows."""

    def interrupt(self) -> None:
        """Stop the running statement (from another thread)."""

    def interrupted(self, exc: BaseException) -> bool:
        """Whether `exc` is the error an interrupted statement raises."""

    def close(self) -> None:
        """Give the cursor back."""


class Warehouse(Protocol):
    """Where endpoint SQL runs; thread-safe, each call takes its own cursor."""

    def open(self) -> None:
        """Connect now, so a bad target fails here and not on the first call."""

    def cursor(self) -> Cursor:
        """A cursor for one call."""

    def columns(self) -> dict[tuple[str, str, str], dict[str, str]]:
        """Every relation: (database, schema, name), lowercased -> column -> type, lowercased."""

    def close(self) -> None:
        """Close every connection; later calls reconnect."""


def group_columns(rows: Sequence[Sequence[Any]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """information_schema.columns rows (catalog, schema, table, column, type) by relation, lowercased."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for database, schema, table, column, data_type in rows:
        out.setdefault((database.lower(), schema.lower(), table.lower()), {})[column.lower()] = data_type.lower()
    return out


def open_warehouse(config: WarehouseConfig, *, lock_wait: float = 10.0) -> Warehouse:
    """The warehouse for `config` (not connected yet: see `Warehouse.open`)."""
    if isinstance(config, DuckDbConfig):
        from .duckdb_target import DuckDbWarehouse

        return DuckDbWarehouse(config, lock_wait=lock_wait)
    from .postgres_target import PostgresWarehouse

    return PostgresWarehouse(config)
