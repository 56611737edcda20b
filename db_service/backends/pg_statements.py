"""One statement on a pooled PostgreSQL connection, in as few round trips as it can take.

A small statement costs its round trips more than anything else (each is also a wake-up of the
server process and of ours). A plain read (``pg_plain_reads``) takes one: the statement alone.
Another read takes two: its ``BEGIN READ ONLY; SET LOCAL statement_timeout``, sent together
with the end of the previous read on the connection, then the statement; its own rollback
waits for the next user (``PgConnection.defer_end``). A write takes three: BEGIN, the
statement, and COMMIT with the session reset. Rows are read up to a limit in the statement's
own round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from db_service.backends.base import ResultSet, limit_bytes
from db_service.backends.pg_pool import PgConnection
from db_service.backends.postgres_types import bind, result_shape, rows_affected


async def set_timeout(conn: PgConnection, timeout_s: float | None) -> None:
    """Let the server cancel the transaction's statements after ``timeout_s``.

    ``SET LOCAL`` ends with the transaction, and a statement the server cancels leaves the
    connection healthy, so it goes back to the pool (unlike a client-side cancel).
    """
    if timeout_s is not None:
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")


async def begin(conn: PgConnection, *, read_only: bool, timeout_s: float | None) -> None:
    """Open the transaction of one statement, with the end of the previous read if pending.

    BEGIN and ``SET LOCAL statement_timeout`` go as one simple query, after whatever ends the
    read-only transaction the connection's previous user left open (:func:`end`). On any error
    or cancellation before :func:`end`: :func:`abort`, and the pool resets the session.
    """
    begin = "BEGIN READ ONLY" if read_only else "BEGIN READ WRITE"
    if timeout_s is not None:
        begin += f"; SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}"
    await conn.execute(conn.take_pending_end() + begin)


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (``time.monotonic()``), at least a millisecond; None: none."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


async def read_plain(
    conn: PgConnection,
    sql: str,
    params: Sequence[Any],
    *,
    max_rows: int,
    max_bytes: int,
    timeout_s: float | None,
) -> ResultSet:
    """A plain read (``pg_plain_reads``): the statement alone, one round trip.

    It runs in the implicit transaction of the extended protocol, read-only by the session's
    default, so the engine refuses a write. The session is as the statement found it, so the
    connection goes back to the pool without a reset, unless the server reports that its
    read-only default changed (a function the statement reached through a view, say). After an
    error or a timeout it gets the pool's reset, which also waits for the cancel request.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if conn.pending_end:
        await conn.execute(conn.take_pending_end(), timeout=time_left(deadline))
    result = await fetch(
        conn, sql, params, max_rows=max_rows, max_bytes=max_bytes, deadline=deadline
    )
    if conn.session_read_only():
        conn.mark_reset()
    return result


async def abort(conn: PgConnection) -> None:
    """Roll back the transaction :func:`begin` opened, after an error or a cancellation."""
    if not conn.is_closed() and conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# The unlock first, inside the read's transaction (a session lock is released at once, whatever
# the transaction does next): a query after the ROLLBACK would open an implicit transaction,
# read-only by the session's default, that the BEGIN READ WRITE sent with it would then join.
END_READ = "SELECT pg_advisory_unlock_all(); ROLLBACK; "


async def end(conn: PgConnection, *, read_only: bool) -> None:
    """End the transaction :func:`begin` opened; a write's reset goes in the same round trip."""
    if read_only:
        # Everything a statement can change in a session is undone by the rollback (settings,
        # LISTEN, cursors, temporary tables) but a session advisory lock. Nothing to wait for:
        # the next user of the connection sends it with its own BEGIN (or the pool does).
        conn.defer_end(END_READ)
        return
    # A failed COMMIT (a deferred constraint) stops the script there: the error reaches
    # the caller and, not marked reset, the session gets the pool's full reset.
    await conn.execute("COMMIT;\n" + conn.get_reset_query())
    conn.mark_reset()


# The server's answers when a cached statement no longer fits the schema or was deallocated
# (DISCARD ALL / DEALLOCATE by a client): drop the cache and retry once.
STALE_STATEMENT = (
    asyncpg.FeatureNotSupportedError,
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.InvalidCachedStatementError,
)


async def forget_statements(conn: PgConnection) -> None:
    """After a stale statement: every statement of ``conn`` is prepared afresh from now on."""
    conn.forget_statements()
    await conn.reload_schema_state()


def is_stale(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.InvalidSQLStatementNameError | asyncpg.InvalidCachedStatementError):
        return True
    return isinstance(exc, asyncpg.FeatureNotSupportedError) and "cached plan" in str(exc)


async def fetch(
    conn: PgConnection,
    sql: str,
    params: Sequence[Any],
    *,
    max_rows: int,
    max_bytes: int,
    deadline: float | None = None,
) -> ResultSet:
    """Run one statement; rows in wire form.

    ``deadline`` (``time.monotonic()``) is a client-side limit on its prepare and its run
    (asyncpg sends the server a cancel request when it passes, and raises TimeoutError), for
    a statement outside a transaction's SET LOCAL.
    """
    statement = conn.statement(sql) or await conn.prepare_statement(
        sql, result_shape, time_left(deadline)
    )
    prepared, columns, encode = statement
    bound = bind(prepared, params)
    if encode is None:
        await prepared.fetch(*bound, timeout=time_left(deadline))
        return ResultSet(rows_affected=rows_affected(prepared.get_statusmsg()))
    fetched = await fetch_limited(prepared, bound, max_rows + 1, time_left(deadline))
    status = prepared.get_statusmsg()
    rows, cut = limit_bytes([encode(r) for r in fetched[:max_rows]], max_bytes)
    affected = rows_affected(status) if status and not status.startswith("SELECT") else -1
    return ResultSet(
        columns=columns,
        rows=rows,
        rows_affected=affected,
        truncated=cut or len(fetched) > max_rows,
    )


# asyncpg's bind-and-execute with a row limit (what fetchrow uses, with limit 1): one round trip
# on the unnamed portal, where a cursor costs another to close its portal. Private in asyncpg
# 0.30-0.32; without it, a cursor does the same in one more round trip, and only inside a
# transaction, so plain reads (outside one) are off.
BIND_EXECUTE = getattr(
    asyncpg.prepared_stmt.PreparedStatement, "_PreparedStatement__bind_execute", None
)
PLAIN_READS = BIND_EXECUTE is not None


async def fetch_limited(
    statement: Any, bound: Sequence[Any], limit: int, timeout_s: float | None = None
) -> list[Any]:
    """At most ``limit`` rows of a prepared statement, without reading the rest."""
    if BIND_EXECUTE is not None:
        return list(await BIND_EXECUTE(statement, bound, limit, timeout_s))
    fetched = []
    async with asyncio.timeout(timeout_s):
        async for record in statement.cursor(*bound, prefetch=limit):
            fetched.append(record)
            if len(fetched) >= limit:
                break
    return fetched
