"""The PostgreSQL pool on a real server: what a read leaves open is ended on time, a cancelled
query's connection is reused, idle and closed pools leave no sessions behind; plain reads run
outside a transaction, are cancelled at their deadline and are read-only by the engine's check."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db_service.backends.base import PoolLimits
from db_service.backends.pg_pool import PgConnection
from db_service.backends.postgres import PostgresBackend
from db_service.errors import BadStatement, StatementTimeout
from tests.conftest import eventually
from tests.integration.test_db_service import temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with temporary_database("postgresql", tmp_path) as made:
        admin = await asyncpg.connect(made)
        try:
            await admin.execute(
                "CREATE TABLE items (id INTEGER PRIMARY KEY);"
                " CREATE TABLE reads_log (n INTEGER);"
                # A view that writes when read: what only the engine's own check can refuse.
                " CREATE FUNCTION log_a_read() RETURNS INTEGER LANGUAGE sql"
                "   AS 'INSERT INTO reads_log VALUES (1) RETURNING 1';"
                " CREATE VIEW logged_items AS SELECT id, log_a_read() AS logged FROM items;"
            )
        finally:
            await admin.close()
        yield made


@pytest.fixture
async def backend(url: str) -> AsyncIterator[PostgresBackend]:
    made = PostgresBackend("main", url, limits=PoolLimits(min_size=1, max_size=1))
    await made.open()
    try:
        yield made
    finally:
        await made.aclose()


async def read(backend: PostgresBackend, sql: str, timeout_s: float | None = None) -> list[int]:
    """The integers of a result's rows."""
    result = await backend.execute(
        sql, [], read_only=True, max_rows=10, max_bytes=1 << 20, timeout_s=timeout_s
    )
    return [value.int64_value for row in result.rows for value in row.values]


async def pool_sessions(url: str, what: str) -> Any:
    """``what`` (an expression over pg_stat_activity) of the test database's other sessions:
    the pool's."""
    admin = await asyncpg.connect(url)
    try:
        return await admin.fetchval(
            f"SELECT {what} FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("read_sql", "then_sql"),
    [
        # A table lock the read took (until its transaction ends) would stop DDL.
        ("SELECT count(*) FROM items", "ALTER TABLE items ADD COLUMN name TEXT"),
        # A session advisory lock outlives the transaction; the pool releases it too.
        ("SELECT pg_advisory_lock(7)", "SELECT pg_advisory_lock(7)"),
    ],
)
async def test_what_a_read_holds_is_released_while_its_connection_idles(
    backend: PostgresBackend, url: str, read_sql: str, then_sql: str
) -> None:
    await read(backend, read_sql)
    admin = await asyncpg.connect(url)
    try:
        # The engine enforces the bound: LockNotAvailableError if the lock stayed.
        await admin.execute("SET lock_timeout = '3s'")
        await admin.execute(then_sql)
    finally:
        await admin.close()


async def test_reads_and_writes_alternate_on_one_connection(url: str) -> None:
    backend = PostgresBackend("main", url, limits=PoolLimits(min_size=1, max_size=1))
    await backend.open()
    try:
        for i in range(5):
            await backend.execute(
                "INSERT INTO items VALUES ($1)", [i], read_only=False, max_rows=10
            )
            assert await read(backend, "SELECT count(*) FROM items") != []
        result = await backend.execute(
            "SELECT count(*) FROM items", [], read_only=True, max_rows=10
        )
        assert result.rows[0].values[0].int64_value == 5
        with pytest.raises(Exception, match="read-only"):
            await backend.execute("INSERT INTO items VALUES (99)", [], read_only=True, max_rows=1)
    finally:
        await backend.aclose()


async def test_a_query_past_its_deadline_is_cancelled_and_its_connection_reused(
    url: str,
) -> None:
    backend = PostgresBackend("main", url, limits=PoolLimits(min_size=1, max_size=1))
    await backend.open()
    try:
        pid = await read(backend, "SELECT pg_backend_pid()")
        with pytest.raises(StatementTimeout):
            await backend.execute(
                "SELECT pg_sleep(5)", [], read_only=True, max_rows=1, timeout_s=0.1
            )
        # A caller that gives up (a cancelled RPC) leaves the query to be cancelled too.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await read(backend, "SELECT pg_sleep(5)")
        assert await read(backend, "SELECT pg_backend_pid()") == pid
    finally:
        await backend.aclose()


async def test_idle_connections_are_closed_after_the_idle_limit(url: str) -> None:
    limits = PoolLimits(min_size=0, max_size=2, idle_recycle_s=0.2)
    backend = PostgresBackend("main", url, limits=limits)
    await backend.open()
    try:
        await read(backend, "SELECT 1")
        assert backend.pool_stats().size == 1
        await eventually(lambda: backend.pool_stats().size == 0)
        await eventually(lambda: _none_left(url))
        assert await read(backend, "SELECT 1") != []
    finally:
        await backend.aclose()


async def test_a_closed_pool_leaves_no_session_open(url: str) -> None:
    backend = PostgresBackend("main", url, limits=PoolLimits(min_size=2, max_size=2))
    await backend.open()
    await asyncio.gather(*(read(backend, "SELECT pg_sleep(0.05)") for _ in range(2)))
    await backend.aclose()
    await eventually(lambda: _none_left(url))


async def _none_left(url: str) -> bool:
    return bool(await pool_sessions(url, "count(*)") == 0)


async def test_a_connection_found_broken_is_reported_lost_once_and_a_retired_one_not(
    url: str,
) -> None:
    lost: list[int] = []
    found_broken = await asyncpg.connect(url, connection_class=PgConnection)
    retired = await asyncpg.connect(url, connection_class=PgConnection)
    for conn in (found_broken, retired):
        conn.on_lost = lambda: lost.append(1)
    found_broken.broken()
    found_broken.terminate()
    retired.terminate()
    assert found_broken.is_closed()
    assert retired.is_closed()
    assert lost == [1]


async def test_a_plain_read_leaves_no_transaction_and_another_read_does(
    backend: PostgresBackend, url: str
) -> None:
    await backend.execute("INSERT INTO items VALUES (1)", [], read_only=False, max_rows=1)
    assert await read(backend, "SELECT count(*) FROM items", timeout_s=5.0) == [1]
    assert await pool_sessions(url, "state") == "idle"
    # Not plain (a function outside the allow-list): its read-only transaction stays open
    # until the connection's next use or a short idle time.
    await read(backend, "SELECT pg_sleep(0)", timeout_s=5.0)
    assert await pool_sessions(url, "state") == "idle in transaction"
    assert await read(backend, "SELECT count(*) FROM items") != []
    assert await pool_sessions(url, "state") == "idle"


LONG_PLAIN_READ = "SELECT count(*) FROM generate_series(1, 1000000000)"


async def test_a_plain_read_past_its_deadline_is_cancelled_and_its_connection_reused(
    backend: PostgresBackend,
) -> None:
    pid = await read(backend, "SELECT pg_backend_pid()")
    with pytest.raises(StatementTimeout) as raised:
        await read(backend, LONG_PLAIN_READ, timeout_s=0.2)
    assert raised.value.engine_code == "57014"
    assert await read(backend, "SELECT pg_backend_pid()") == pid
    # A caller that gives up (a cancelled RPC) leaves the query to be cancelled too.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await read(backend, LONG_PLAIN_READ)
    assert await read(backend, "SELECT pg_backend_pid()") == pid
    assert await read(backend, "SELECT count(*) FROM items") != []


def local_process(pid: int) -> bool:
    return Path(f"/proc/{pid}/status").exists()


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits to be handled by process ``pid`` (Linux /proc)."""
    pending = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    return bool(pending >> (signum - 1) & 1)


async def test_a_cancel_request_the_server_ignored_is_sent_again(
    backend: PostgresBackend,
) -> None:
    (pid,) = await read(backend, "SELECT pg_backend_pid()")
    if not local_process(pid) or os.geteuid() != 0:
        pytest.skip("needs the PostgreSQL server on this host and root to pause its session")
    count_to = "SELECT count(*) FROM generate_series(1, $1::bigint)"
    await backend.execute(count_to, [10], read_only=True, max_rows=1)  # now prepared
    # A session too busy to have started the statement when the cancel request comes (here:
    # paused) handles the request first, finds nothing running, and then runs the statement.
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(StatementTimeout):
            await backend.execute(count_to, [10**9], read_only=True, max_rows=1, timeout_s=0.2)
        await eventually(lambda: signal_pending(pid, signal.SIGINT))
    finally:
        os.kill(pid, signal.SIGCONT)
    # Cancelled by the request sent again: the connection is back well before the pool would
    # give up on it (RESET_TIMEOUT_S) and the caller on a free connection (5 s).
    assert await read(backend, "SELECT pg_backend_pid()") == [pid]


async def test_a_plain_read_that_reaches_a_write_through_a_view_is_refused_by_the_engine(
    backend: PostgresBackend, url: str
) -> None:
    await backend.execute("INSERT INTO items VALUES (1)", [], read_only=False, max_rows=1)
    with pytest.raises(BadStatement, match="read-only"):
        await read(backend, "SELECT logged FROM logged_items")
    admin = await asyncpg.connect(url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM reads_log") == 0
    finally:
        await admin.close()


async def test_writes_and_migrations_still_write_on_read_only_sessions(
    backend: PostgresBackend,
) -> None:
    await backend.execute("INSERT INTO items VALUES (1), (2)", [], read_only=False, max_rows=1)
    assert await backend.executemany("INSERT INTO items VALUES ($1)", [[3], [4]]) == 2
    async with backend.transaction(isolation="", read_only=False) as session:
        await session.execute(
            "INSERT INTO items VALUES (5)", [], max_rows=1, max_bytes=0, timeout_s=None
        )
        await session.commit()
    async with backend.migration_session() as migrating:
        await migrating.execute_script("CREATE TABLE made_by_a_migration (id INTEGER)")
        async with migrating.transaction():
            await migrating.execute("INSERT INTO made_by_a_migration VALUES (1)")
    assert await read(backend, "SELECT count(*) FROM items") == [5]
    # The migration's session setting did not follow the connection back into the pool.
    with pytest.raises(BadStatement, match="read-only"):
        await read(backend, "SELECT logged FROM logged_items")


async def test_a_statement_kept_before_its_result_type_changed_is_prepared_again(
    backend: PostgresBackend, url: str
) -> None:
    await admin_alter(url, "CREATE TABLE kinds (v INTEGER); INSERT INTO kinds VALUES (1)")
    # One connection: the statement read next is the one it keeps prepared.
    assert await read(backend, "SELECT * FROM kinds") == [1]
    await admin_alter(url, "ALTER TABLE kinds ALTER COLUMN v TYPE BIGINT")
    # A plain read outside a transaction is sent again, prepared afresh.
    assert await read(backend, "SELECT * FROM kinds") == [1]
    await admin_alter(url, "ALTER TABLE kinds ADD COLUMN name TEXT")
    # Inside a transaction the statement fails (the transaction is spoilt), but not the next.
    for attempt in (1, 2):
        async with backend.transaction(isolation="", read_only=True) as session:
            run = session.execute(
                "SELECT * FROM kinds", [], max_rows=10, max_bytes=0, timeout_s=None
            )
            if attempt == 1:
                with pytest.raises(Exception, match="cached statement plan is invalid"):
                    await run
            else:
                assert [c.name for c in (await run).columns] == ["v", "name"]


async def admin_alter(url: str, sql: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()
