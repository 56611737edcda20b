"""A server that ends a session mid-statement (pg_terminate_backend, KILL, a shutdown): the call
fails with UNAVAILABLE, never INTERNAL or INVALID_ARGUMENT, and the pool is whole afterwards.

The victim is found by a marker in its SQL (a column alias) in the engine's own session list,
then ended from another session, as an operator or a failing-over cluster would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service.backends.mysql import connect_kwargs
from db_service.backends.postgres import PostgresBackend
from tests.conftest import backing_url, eventually
from tests.integration.test_db_pool import kill, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

URL = {"postgresql": "PACA_TEST_POSTGRES_URL", "mysql": "PACA_TEST_MYSQL_URL"}
# Long enough that only the kill can end it within the test's timeout.
SLEEP = {"postgresql": "SELECT pg_sleep(20) AS {marker}", "mysql": "SELECT SLEEP(20) AS {marker}"}
SESSIONS = {
    "postgresql": "SELECT pid FROM pg_stat_activity"
    " WHERE (query LIKE $1 OR pid = $2) AND pid <> pg_backend_pid()",
    "mysql": "SELECT id FROM information_schema.processlist"
    " WHERE (info LIKE %s OR id = %s) AND id <> CONNECTION_ID()",
}
BACKEND_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}

Stub = db_service_pb2_grpc.DbServiceStub


async def _sessions(dialect: str, marker: str = "", session: int = -1) -> list[int]:
    """Ids of the engine's sessions whose current statement contains ``marker``, or ``session``
    while it still exists."""
    pattern = f"%{marker}%" if marker else None
    if dialect == "postgresql":
        admin = await asyncpg.connect(backing_url(URL[dialect]))
        try:
            return [row[0] for row in await admin.fetch(SESSIONS[dialect], pattern, session)]
        finally:
            await admin.close()
    conn = await aiomysql.connect(**connect_kwargs(backing_url(URL[dialect])))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(SESSIONS[dialect], (pattern, session))
            return [int(row[0]) for row in await cursor.fetchall()]
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def _served(dialect: str, tmp_path: Path) -> AsyncIterator[Stub]:
    """The service on the shared test database, with a pool of two."""
    async with serve(f"{backing_url(URL[dialect])}?pool_max=2", tmp_path) as (_, stub):
        yield stub


async def _kill_when_running(dialect: str, marker: str) -> None:
    victims: list[int] = []

    async def running() -> bool:
        victims[:] = await _sessions(dialect, marker)
        return bool(victims)

    await eventually(running, timeout_s=10)
    for victim in victims:
        await kill(dialect, victim)


async def _end_session(dialect: str, session: int) -> None:
    """Kill ``session`` and wait until the engine has ended it (a kill only asks)."""
    await kill(dialect, session)

    async def gone() -> bool:
        return not await _sessions(dialect, session=session)

    await eventually(gone, timeout_s=10)


async def _pool_is_whole(stub: Stub) -> None:
    """Every connection is back (none held by the failed call) and a write, which is never
    retried, succeeds at once: no dead connection was left in the pool."""
    reply = await stub.Execute(db_service_pb2.ExecuteRequest(sql="SELECT 1"))
    assert reply.rows[0].values[0].int64_value == 1
    stats = await stub.GetStats(db_service_pb2.GetStatsRequest())
    assert stats.pools[0].in_use == 0


async def _execute(stub: Stub, sql: str) -> None:
    await stub.Execute(db_service_pb2.ExecuteRequest(sql=sql))


async def _stream(stub: Stub, sql: str) -> None:
    async for _ in stub.StreamQuery(db_service_pb2.StreamQueryRequest(sql=sql)):
        pass


async def _in_transaction(stub: Stub, sql: str) -> None:
    call = stub.Transaction()
    await call.write(db_service_pb2.TransactionRequest(begin=db_service_pb2.BeginTransaction()))
    await call.read()
    await call.write(
        db_service_pb2.TransactionRequest(statement=db_service_pb2.TransactionStatement(sql=sql))
    )
    await call.read()


CALLS: dict[str, Callable[[Stub, str], Coroutine[Any, Any, None]]] = {
    "execute": _execute,
    "stream": _stream,
    "transaction": _in_transaction,
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_session_ended_mid_statement_fails_unavailable_and_the_pool_recovers(
    dialect: str, call: str, tmp_path: Path
) -> None:
    backing_url(URL[dialect])
    marker = f"death_{uuid.uuid4().hex[:12]}"
    async with _served(dialect, tmp_path) as stub:
        running = asyncio.create_task(CALLS[call](stub, SLEEP[dialect].format(marker=marker)))
        await _kill_when_running(dialect, marker)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert "released back to the pool" not in (caught.value.details() or "")
        await _pool_is_whole(stub)
        stats = await stub.GetStats(db_service_pb2.GetStatsRequest())
        assert stats.figures[0].connections_discarded >= 1


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_session_ended_while_idle_in_a_transaction_fails_its_next_statement_unavailable(
    dialect: str, tmp_path: Path
) -> None:
    backing_url(URL[dialect])
    async with _served(dialect, tmp_path) as stub:
        call = stub.Transaction()
        await call.write(db_service_pb2.TransactionRequest(begin=db_service_pb2.BeginTransaction()))
        await call.read()
        statement = db_service_pb2.TransactionStatement(sql=BACKEND_ID[dialect])
        await call.write(db_service_pb2.TransactionRequest(statement=statement))
        victim = (await call.read()).rows[0].values[0].int64_value
        await _end_session(dialect, victim)
        await call.write(db_service_pb2.TransactionRequest(statement=statement))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        await _pool_is_whole(stub)


async def test_a_mysql_statement_that_kills_its_own_session_is_unavailable_and_discarded(
    tmp_path: Path,
) -> None:
    # The server reports this kill in an error packet (1927) before closing the socket, not as
    # a lost connection: the connection must still be dropped, not lent again.
    backing_url(URL["mysql"])
    async with _served("mysql", tmp_path) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(db_service_pb2.ExecuteRequest(sql="KILL CONNECTION_ID()"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        await _pool_is_whole(stub)


async def test_a_postgres_connection_terminated_during_its_release_is_not_an_error() -> None:
    # asyncpg's Pool.release() checks the connection is still lent, then runs the holder's
    # release in a task of its own. A connection terminated in between (asyncpg's background
    # CancelRequest failing against a dead server does this) has by then been handed back by
    # its cleanup, and the holder's release finds a free holder. The two hops put the
    # terminate exactly there: after the pool's check, before the holder's release.
    backend = PostgresBackend("main", backing_url(URL["postgresql"]), pool_size=2)
    await backend.open()
    try:
        loop = asyncio.get_running_loop()
        async with backend._connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            loop.call_soon(loop.call_soon, conn.terminate)
        result = await backend.execute("SELECT 2", (), read_only=False, max_rows=1)
        assert result.rows[0].values[0].int64_value == 2
        assert backend.pool_stats().in_use == 0
    finally:
        await backend.aclose()
