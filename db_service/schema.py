"""The live schema of a database: which tables and columns exist, for the query builder.

The builder only puts names into SQL that the database itself reports, so a table or column name
can never carry SQL. The catalog is read once and cached; a name not in the cache makes one fresh
read (concurrent misses share it), so a table created after the first read is found without a
restart. Hand-written rather than SQLAlchemy's ``inspect``: that needs an SQLAlchemy engine with
its own pool, while one catalog query through the backend's pool is all the builder needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from db_service.backends.base import Backend
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

# Tables and views of the database's default schema with their columns, in column order.
CATALOG_SQL = {
    "sqlite": (
        "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p"
        " WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid"
    ),
    "postgresql": (
        "SELECT table_name::text, column_name::text FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ),
    "mysql": (
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
    ),
}
# Enough for any real schema; a catalog bigger than this is cut (and logged).
_MAX_CATALOG_ROWS = 1_000_000
_SHOWN_NAME_CHARS = 64


def shown(name: str) -> str:
    """A user-supplied name for an error message: quoted, and cut when long."""
    if len(name) > _SHOWN_NAME_CHARS:
        name = name[:_SHOWN_NAME_CHARS] + "..."
    return repr(name)


class Schema:
    """Cached tables and columns of one database.

    Args:
        backend: The database, opened.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._tables: dict[str, tuple[str, ...]] | None = None
        self._lock = asyncio.Lock()
        # Bumped by every catalog read, so waiters on a read in flight do not read again.
        self._generation = 0
        self.reads = 0

    def __repr__(self) -> str:
        tables = "unread" if self._tables is None else len(self._tables)
        return f"<Schema db={self.backend.name} tables={tables} reads={self.reads}>"

    def invalidate(self) -> None:
        """Forget the cached catalog (e.g. after the engine refused a built statement)."""
        self._tables = None

    async def tables(self) -> Mapping[str, tuple[str, ...]]:
        """Table name → column names, read from the catalog on first use."""
        if self._tables is None:
            await self._reload(self._generation)
        assert self._tables is not None
        return self._tables

    async def check(self, table: tuple[str, str], columns: Iterable[tuple[str, str]]) -> None:
        """Raise InvalidArgument naming the field of the first unknown table or column.

        Args:
            table: ``(field, name)`` of the table, e.g. ``("select.table", "users")``.
            columns: ``(field, name)`` of every column the statement names.

        A miss re-reads the catalog once before it is an error.
        """
        wanted = list(columns)
        generation = self._generation
        if self._unknown(await self.tables(), table, wanted) is None:
            return
        await self._reload(generation)
        assert self._tables is not None
        unknown = self._unknown(self._tables, table, wanted)
        if unknown is not None:
            field, message = unknown
            raise InvalidArgument(field, message)

    @staticmethod
    def _unknown(
        tables: Mapping[str, tuple[str, ...]],
        table: tuple[str, str],
        columns: list[tuple[str, str]],
    ) -> tuple[str, str] | None:
        table_field, table_name = table
        known = tables.get(table_name)
        if known is None:
            return table_field, f"unknown table {shown(table_name)}"
        for field, name in columns:
            if name not in known:
                return field, f"unknown column {shown(name)} of table {shown(table_name)}"
        return None

    async def _reload(self, seen_generation: int) -> None:
        async with self._lock:
            if self._generation != seen_generation and self._tables is not None:
                return  # another caller read the catalog while this one waited
            result = await self.backend.execute(
                CATALOG_SQL[self.backend.dialect],
                [],
                read_only=True,
                max_rows=_MAX_CATALOG_ROWS,
            )
            if result.truncated:
                logger.warning(
                    "catalog of %s cut at %d columns", self.backend.name, len(result.rows)
                )
            tables: dict[str, list[str]] = {}
            for row in result.rows:
                table_value, column_value = row.values
                tables.setdefault(table_value.string_value, []).append(column_value.string_value)
            self._tables = {name: tuple(columns) for name, columns in tables.items()}
            self._generation += 1
            self.reads += 1
            logger.debug("read the catalog of %s: %d tables", self.backend.name, len(tables))
