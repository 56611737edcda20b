"""In-process use of db_service's engines, without a server: the seed's database API.

    config = create_sqlite_config("test.db")
    db = SQLConnector(config)
    await db.connect()
    result = await db.execute_query("SELECT 1 as test")
    print(result.is_success, result.data)      # True [{'test': 1}]
    await db.disconnect()

A thin layer over the same engine classes the gRPC servicer uses (pools, statement timeouts,
type mapping, figures), so a statement behaves the same in-process and over the wire.
``execute_query`` returns a result object instead of raising for database errors (the seed's
"Result type" convention); misuse (not connected) raises.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from paca.db.v1 import db_service_pb2, db_types_pb2
from paca.monitor.v1 import monitor_types_pb2

from db_service import values
from db_service.backends.base import Backend, PoolLimits, ResultSet, TransactionSession
from db_service.builder import QueryBuilder
from db_service.databases import BACKENDS
from db_service.errors import DbUnavailable
from db_service.figures import database_figures
from db_service.settings import SCHEMES
from paca_runtime.errors import StatusError
from paca_runtime.redact import redact_url

__all__ = [
    "ConnectionPool",
    "DatabaseConfig",
    "DatabaseMonitor",
    "QueryBuilder",
    "QueryResult",
    "SQLConnector",
    "create_mysql_config",
    "create_postgres_config",
    "create_sqlite_config",
]


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """How to reach one database and size its pool."""

    url: str = field(repr=False)
    name: str = "main"
    pool: PoolLimits = field(default_factory=PoolLimits)
    max_rows: int = 10_000
    # Default statement time limit of execute_query (None: none).
    statement_timeout_s: float | None = None

    def __post_init__(self) -> None:
        scheme = self.url.partition(":")[0]
        if scheme not in SCHEMES:
            raise ValueError(f"url: unsupported scheme {scheme!r} in {redact_url(self.url)!r}")

    def __repr__(self) -> str:
        return f"DatabaseConfig(name={self.name!r}, url={redact_url(self.url)!r}, pool={self.pool})"

    @property
    def dialect(self) -> str:
        return SCHEMES[self.url.partition(":")[0]]


def _limits(pool_size: int, acquire_timeout_s: float, **pool: Any) -> PoolLimits:
    return PoolLimits(max_size=pool_size, acquire_timeout_s=acquire_timeout_s, **pool)


def create_sqlite_config(
    path: str | Path, *, pool_size: int = 4, acquire_timeout_s: float = 5.0, **pool: Any
) -> DatabaseConfig:
    """A SQLite database file (created when missing); relative paths from the working dir."""
    url = f"sqlite:///{Path(path).resolve()}"
    return DatabaseConfig(url, pool=_limits(pool_size, acquire_timeout_s, **pool))


def _server_url(scheme: str, host: str, port: int, database: str, user: str, password: str) -> str:
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"{scheme}://{credentials}@{host}:{port}/{quote(database, safe='')}"


def create_postgres_config(
    host: str = "localhost",
    port: int = 5432,
    database: str = "postgres",
    user: str = "postgres",
    password: str = "",
    *,
    pool_size: int = 10,
    acquire_timeout_s: float = 5.0,
    **pool: Any,
) -> DatabaseConfig:
    """A PostgreSQL database."""
    url = _server_url("postgresql", host, port, database, user, password)
    return DatabaseConfig(url, pool=_limits(pool_size, acquire_timeout_s, **pool))


def create_mysql_config(
    host: str = "localhost",
    port: int = 3306,
    database: str = "",
    user: str = "root",
    password: str = "",
    *,
    pool_size: int = 10,
    acquire_timeout_s: float = 5.0,
    **pool: Any,
) -> DatabaseConfig:
    """A MySQL or MariaDB database."""
    url = _server_url("mysql", host, port, database, user, password)
    return DatabaseConfig(url, pool=_limits(pool_size, acquire_timeout_s, **pool))


@dataclass(slots=True)
class QueryResult:
    """The outcome of one statement: rows as dicts on success, the error's text otherwise."""

    is_success: bool
    data: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # The status code name of the error (INVALID_ARGUMENT, ALREADY_EXISTS, ...), as over gRPC.
    error_code: str | None = None
    columns: list[str] = field(default_factory=list)
    rows_affected: int = -1
    truncated: bool = False
    elapsed_ms: float = 0.0


def _result(result: ResultSet, elapsed_ms: float) -> QueryResult:
    names = [c.name for c in result.columns]
    data = [
        {name: values.decode(value, name) for name, value in zip(names, row.values, strict=True)}
        for row in result.rows
    ]
    return QueryResult(
        True,
        data,
        columns=names,
        rows_affected=result.rows_affected,
        truncated=result.truncated,
        elapsed_ms=elapsed_ms,
    )


class ConnectionPool:
    """A read-only view of a connector's pool (the engine owns the connections)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"<ConnectionPool db={stats.database} size={stats.size} in_use={stats.in_use} "
            f"idle={stats.idle} waiting={stats.waiting}>"
        )

    def stats(self) -> db_types_pb2.PoolStats:
        return self._backend.pool_stats()

    @property
    def size(self) -> int:
        return self.stats().size

    @property
    def in_use(self) -> int:
        return self.stats().in_use

    @property
    def idle(self) -> int:
        return self.stats().idle

    @property
    def max_size(self) -> int:
        return self._backend.limits.max_size


class SQLConnector:
    """One database, in-process. Lifecycle: ``connect()`` once, statements, ``disconnect()``
    (idempotent); also an async context manager."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._backend: Backend | None = None

    def __repr__(self) -> str:
        state = "connected" if self._backend is not None else "disconnected"
        return f"<SQLConnector db={self.config.name} {redact_url(self.config.url)} {state}>"

    async def __aenter__(self) -> SQLConnector:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._backend is not None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise DbUnavailable(f"{self.config.name}: not connected (call connect() first)")
        return self._backend

    @property
    def pool(self) -> ConnectionPool:
        return ConnectionPool(self.backend)

    def query_builder(self) -> QueryBuilder:
        """A builder over this database's live schema (compile Select/Insert/... messages)."""
        return QueryBuilder(self.backend)

    async def connect(self) -> None:
        """Open the pool (idempotent); raises DbUnavailable when the database is unreachable."""
        if self._backend is not None:
            return
        backend = BACKENDS[self.config.dialect](
            self.config.name, self.config.url, limits=self.config.pool
        )
        await backend.open()
        self._backend = backend

    async def disconnect(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.aclose()

    async def execute_query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        read_only: bool = False,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """Run one statement; database errors come back in the result, not raised.

        Args:
            params: Bound to the engine's placeholders ("?" SQLite, "$1" PostgreSQL, "%s" MySQL).
            read_only: Run in a read-only transaction (SQLite: on a reader connection).
            timeout_s: The engine cancels the statement after this long.
        """
        backend = self.backend
        started = time.perf_counter()
        try:
            result = await backend.execute(
                sql,
                list(params),
                read_only=read_only,
                max_rows=self.config.max_rows,
                timeout_s=timeout_s or self.config.statement_timeout_s,
            )
        except StatusError as exc:
            return QueryResult(False, error=str(exc), error_code=exc.code.name)
        return _result(result, (time.perf_counter() - started) * 1000)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, read_only: bool = False
    ) -> AsyncIterator[TransactionSession]:
        """A transaction on one held connection; commits when the block ends without error,
        rolls back otherwise."""
        async with self.backend.transaction(isolation=isolation, read_only=read_only) as session:
            yield session
            if not session.finished:
                await session.commit()


class DatabaseMonitor:
    """Figures of connected databases: pool state, acquire waits, latency per statement shape."""

    def __init__(self, *connectors: SQLConnector) -> None:
        self.connectors = list(connectors)

    def __repr__(self) -> str:
        return f"<DatabaseMonitor dbs={[c.config.name for c in self.connectors]}>"

    def add(self, connector: SQLConnector) -> None:
        self.connectors.append(connector)

    def snapshot(self) -> db_service_pb2.GetStatsResponse:
        """The same figures GetStats returns, for the connected databases."""
        live = [c.backend for c in self.connectors if c.is_connected]
        return db_service_pb2.GetStatsResponse(
            pools=[b.pool_stats() for b in live],
            figures=[b.figures.to_proto(b.limits.max_size) for b in live],
        )

    def metrics(self) -> Iterator[monitor_types_pb2.Metric]:
        """The figures as monitor metrics (for a MonitorReporter's figure source)."""
        for figures in self.snapshot().figures:
            yield from database_figures(figures)
