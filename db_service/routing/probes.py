"""Health probes: one small query per host on the probe's own connection.

The probe does not borrow from the host's pool: a pool busy with slow statements would make a
healthy host look dead. Each probe says whether the host takes writes (PostgreSQL:
``pg_is_in_recovery()``; MySQL/MariaDB: ``@@read_only``) and how far it has replayed, so a
promoted replica is found by the next probe and takes the writes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiomysql
import asyncpg

from db_service.backends.mysql import connect_kwargs

logger = logging.getLogger(__name__)


class ProbeFailed(Exception):
    """The host did not answer the probe in time, or answered with an error."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    # The host takes writes (not in recovery, not read-only).
    primary: bool
    # Replication position applied (PostgreSQL LSN, GTID position or set); "" when unknown.
    position: str
    # Lag the engine itself reports (MySQL/MariaDB Seconds_Behind_Master); None when the
    # checker derives it from positions (PostgreSQL).
    lag_s: float | None = None


class Probe(Protocol):
    """A probe of one host. ``check`` is never called concurrently with itself."""

    flavor: str

    async def check(self, timeout_s: float) -> ProbeResult: ...

    async def aclose(self) -> None: ...

    def position_sql(self, *, primary: bool) -> str:
        """SQL of one row, one text column: the host's position (run through its pool)."""
        ...


_PG_PROBE = (
    "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_lsn() END)::text"
)


class PostgresProbe:
    flavor = "pg"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def check(self, timeout_s: float) -> ProbeResult:
        try:
            async with asyncio.timeout(timeout_s):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._url, timeout=timeout_s)
                row = await self._conn.fetchrow(_PG_PROBE)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.aclose()
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
        assert row is not None
        return ProbeResult(primary=not row[0], position=row[1] or "")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def position_sql(self, *, primary: bool) -> str:
        return (
            "SELECT pg_current_wal_lsn()::text"
            if primary
            else "SELECT pg_last_wal_replay_lsn()::text"
        )


_ER_PARSE_ERROR = 1064
_OLD_STATUS_SQL = "SHOW SLAVE STATUS"


class MysqlProbe:
    """MySQL or MariaDB (told apart by VERSION() on the first probe)."""

    def __init__(self, url: str) -> None:
        self._kwargs = connect_kwargs(url)
        self._conn: Any = None
        self.flavor = "mysql"
        self._status_sql = "SHOW REPLICA STATUS"

    async def _fetch(self, sql: str) -> list[Any]:
        async with self._conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())

    async def check(self, timeout_s: float) -> ProbeResult:
        try:
            async with asyncio.timeout(timeout_s):
                if self._conn is None or self._conn.closed:
                    self._conn = await aiomysql.connect(
                        **self._kwargs, connect_timeout=max(1, int(timeout_s))
                    )
                    if "mariadb" in self._conn.get_server_info().lower():
                        self.flavor = "mariadb"
                (read_only,) = (await self._fetch("SELECT @@global.read_only"))[0]
                primary = not read_only
                (position,) = (await self._fetch(self.position_sql(primary=primary)))[0]
                lag_s: float | None = None
                if not primary:
                    lag_s = await self._replica_lag()
        except (OSError, TimeoutError, aiomysql.Error) as exc:
            await self.aclose()
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
        return ProbeResult(primary=primary, position=str(position or ""), lag_s=lag_s)

    async def _replica_lag(self) -> float | None:
        # SHOW REPLICA STATUS from MySQL 8.0.22 / MariaDB 10.5.1 (MySQL 8.4 knows no other);
        # SHOW SLAVE STATUS before them. MySQL renamed the column, MariaDB did not.
        async with self._conn.cursor(aiomysql.DictCursor) as cursor:
            try:
                await cursor.execute(self._status_sql)
            except aiomysql.ProgrammingError as exc:
                if exc.args[0] != _ER_PARSE_ERROR or self._status_sql == _OLD_STATUS_SQL:
                    raise
                self._status_sql = _OLD_STATUS_SQL
                await cursor.execute(self._status_sql)
            row = await cursor.fetchone() or {}
        behind = row.get("Seconds_Behind_Source", row.get("Seconds_Behind_Master"))
        # NULL means the replication threads are not running: as good as infinitely behind.
        return float(behind) if behind is not None else float("inf")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def position_sql(self, *, primary: bool) -> str:
        if self.flavor == "mariadb":
            return "SELECT @@gtid_binlog_pos" if primary else "SELECT @@gtid_current_pos"
        return "SELECT @@global.gtid_executed"


def make_probe(dialect: str, url: str) -> Probe:
    """The probe of a host of a ``dialect`` database (PostgreSQL or MySQL/MariaDB)."""
    if dialect == "postgresql":
        return PostgresProbe(url)
    if dialect == "mysql":
        return MysqlProbe(url)
    raise ValueError(f"replicas are not supported for {dialect} databases")
