"""The pool of PostgreSQL connections: first come, first served, with no task per call.

asyncpg's own pool costs a small query about as much CPU as the query itself: its acquire runs
under ``wait_for`` (a task per call even when a connection is idle), its release is awaited
and resets the session in a round trip of its own, and a released connection goes through an
``asyncio.Queue``, which lets a newcomer take it ahead of a caller that was already waiting.
Here an idle connection is taken without awaiting anything, a connection that the statement
path left clean (see ``PgConnection.mark_reset``) goes straight to the oldest waiter, and only a
connection with something to undo (a transaction, a session setting, a pending cancellation)
is reset, in the background, before anyone else gets it. Connections past their lifetime or
idle for too long are closed; a lost one is replaced when a caller needs it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, NamedTuple

import asyncpg

from db_service.backends.handoff import HandOff

logger = logging.getLogger(__name__)

# A statement's result columns and row encoder (None: the statement returns no rows).
ResultShape = tuple[list[Any], Callable[[Any], Any] | None]
# Every session starts read-only: a statement outside an explicit READ WRITE transaction cannot
# write (plain reads count on it). Sent at connect, so the session's RESET ALL restores it.
SESSION_SETTINGS: Final = {"default_transaction_read_only": "on"}
# Statements kept per connection: emptied when full. A kept statement stays prepared on the
# server even once asyncpg's own cache (100 by default) has let it go.
STATEMENTS_KEPT = 128

# A reset that takes longer than this means a stuck connection: it is closed instead.
RESET_TIMEOUT_S = 10.0
# How often a cancel request is sent again while a cancelled statement goes on (settle_cancel).
CANCEL_REPEAT_S = 1.0
# How long an idle connection may keep a read-only transaction open (see defer_end).
END_DEFERRED_AFTER_S = 0.05


class Statement(NamedTuple):
    """A statement prepared on one connection, with its result's columns and row encoder.

    Kept per connection rather than asked of asyncpg's cache each time: that lookup makes a new
    ``PreparedStatement`` per call (and drops it after), and the shape is worked out once.
    """

    prepared: Any  # asyncpg's PreparedStatement: while held, its server statement stays
    columns: list[Any]  # not to be changed: shared by every run of the statement
    encode: Callable[[Any], Any] | None  # None: the statement returns no rows


class PgConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection: when it was opened and last lent, and whether it is clean."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # For the pool's max lifetime: a connection past it is closed when it comes back.
        self.opened_at = time.monotonic()
        self.idle_since = self.opened_at
        # Called once when the connection ends without us closing it (server or network).
        self.on_lost: Callable[[], None] | None = None
        self._ending = False
        self._clean = False
        # SQL that ends a read-only transaction left open on purpose (see defer_end).
        self.pending_end = ""
        # Per SQL text: the statement prepared for it, kept with its result shape.
        self._statements: dict[str, Statement] = {}

    # The signature of asyncpg's Connection.close, which this extends.
    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._ending = True
        await super().close(timeout=timeout)

    def terminate(self) -> None:
        self._ending = True
        super().terminate()

    def _cleanup(self) -> None:
        # asyncpg's hook when the connection ends by itself (the server or network ended it).
        self._report_lost()
        super()._cleanup()

    def broken(self) -> None:
        """End a connection found broken before asyncpg saw it end: reported as lost too."""
        self._report_lost()
        super().terminate()

    def _report_lost(self) -> None:
        if not self._ending:
            self._ending = True
            if self.on_lost is not None:
                self.on_lost()

    def statement(self, sql: str) -> Statement | None:
        """``sql``'s statement as this connection last prepared it, if still usable."""
        found = self._statements.get(sql)
        if found is None or found.prepared._state.closed:
            return None
        return found

    async def prepare_statement(
        self, sql: str, make_shape: Callable[[Any], ResultShape], timeout_s: float | None = None
    ) -> Statement:
        """Prepare ``sql`` (through asyncpg's statement cache: no round trip when it has it)
        and keep it, with its result shape, for the next :meth:`statement`."""
        prepared = await self._prepare(sql, use_cache=True, timeout=timeout_s)
        if len(self._statements) >= STATEMENTS_KEPT:
            self._statements.clear()
        columns, encode = make_shape(prepared)
        kept = self._statements[sql] = Statement(prepared, columns, encode)
        return kept

    def forget_statements(self) -> None:
        """Prepare every statement afresh from now on (the schema changed under them)."""
        self._statements.clear()

    def session_read_only(self) -> bool:
        """Whether the session's default is still read-only (as the server last reported it;
        servers before PostgreSQL 14 do not report it, and count as unchanged)."""
        settings = self._protocol.get_settings()
        return getattr(settings, "default_transaction_read_only", "on") == "on"

    async def settle_cancel(self) -> None:
        """Wait until the server has ended a statement asyncpg cancelled (a client-side timeout
        or a cancelled caller), asking it again every ``CANCEL_REPEAT_S`` meanwhile.

        PostgreSQL ignores a cancel request that reaches the session before the statement has
        started (a busy server), so one request can leave a statement running with no one
        waiting for it. A request that comes after the statement ended is ignored too, so
        asking again is safe. The pool's reset timeout bounds the whole wait.
        """
        protocol = self._protocol
        if not protocol._is_cancelling():
            return
        settled = asyncio.ensure_future(protocol._wait_for_cancellation())
        try:
            while not settled.done():
                await asyncio.wait({settled}, timeout=CANCEL_REPEAT_S)
                if not settled.done():
                    self._cancel_current_command(asyncio.get_running_loop().create_future())
            settled.result()
        finally:
            settled.cancel()

    def mark_reset(self) -> None:
        """The session was just reset along with the end of its transaction: lend it as is."""
        self._clean = True

    def defer_end(self, sql: str) -> None:
        """Leave the read-only transaction of a statement open; ``sql`` ends it later.

        The next user sends ``sql`` in the same round trip as its own first statement (see
        ``take_pending_end``), which saves a read a third of its round trips. Rolling back a
        read-only transaction undoes everything its statement could change in the session
        (but a session advisory lock, which ``sql`` releases), so the deferral is invisible
        to other users, and the pool ends it anyway once the connection has stayed idle for
        ``END_DEFERRED_AFTER_S``, so its locks cannot hold up DDL for longer.
        """
        self.pending_end = sql
        self._clean = True

    def take_pending_end(self) -> str:
        """The SQL that ends a deferred transaction ("" when none), to send before one's own."""
        sql, self.pending_end = self.pending_end, ""
        return sql

    def take_clean(self) -> bool:
        """Whether the session needs no reset before it is lent again (asked once per lending)."""
        clean, self._clean = self._clean, False
        if not clean or self._protocol._is_cancelling():
            return False
        return bool(self.pending_end) or not self.is_in_transaction()


class PgPool:
    """Up to ``max_size`` connections to one server, lent in the order callers asked."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int,
        max_size: int,
        max_lifetime_s: float,
        idle_recycle_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._url = url
        self._min_size = min(min_size, max_size)
        self._max_size = max_size
        self._max_lifetime_s = max_lifetime_s
        self._idle_recycle_s = idle_recycle_s
        self._on_lost = on_lost
        self._idle: HandOff[PgConnection] = HandOff()
        self._size = 0  # open or being opened
        self._closed = False
        self._background: dict[asyncio.Task[Any], PgConnection | None] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._end_timer: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return self._idle.idle_count()

    async def open(self) -> None:
        """Open ``min_size`` connections; the first failure is raised (nothing is left open)."""
        try:
            opened = await asyncio.gather(*(self._open_one() for _ in range(self._min_size)))
        except BaseException:
            await self.close()
            raise
        for conn in opened:
            self._idle.put(conn)
        interval = max(1.0, min(self._idle_recycle_s, self._max_lifetime_s) / 4)
        self._sweeper = asyncio.create_task(self._sweep(interval), name="pg-pool-sweeper")

    async def _open_one(self) -> PgConnection:
        self._size += 1
        try:
            conn: PgConnection = await asyncpg.connect(
                self._url, connection_class=PgConnection, server_settings=SESSION_SETTINGS
            )
        except BaseException:
            self._size -= 1
            raise
        conn.on_lost = self._on_lost
        return conn

    def _expired(self, conn: PgConnection, now: float) -> bool:
        return (
            conn.is_closed()
            or now - conn.opened_at > self._max_lifetime_s
            or now - conn.idle_since > self._idle_recycle_s
        )

    def would_wait(self) -> bool:
        return self._idle.would_wait()

    def take_idle(self) -> PgConnection | None:
        """An idle connection at once, or None when the caller would have to wait (closed
        ones and those past their lifetime are dropped on the way); None too once closed."""
        if self._closed:
            return None
        now = time.monotonic()
        while not self._idle.would_wait():
            conn = self._idle.take()
            if not self._expired(conn, now):
                return conn
            self._discard(conn)
        return None

    async def acquire(self, timeout_s: float) -> PgConnection:
        if self._closed:
            raise asyncpg.InterfaceError("the pool is closed")
        conn = self.take_idle()
        if conn is not None:
            return conn
        deadline = time.monotonic() + timeout_s
        while True:
            if self._size < self._max_size:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    return await self._open_one()
            conn = await self._idle.get(max(0.0, deadline - time.monotonic()))
            if not self._expired(conn, time.monotonic()):
                return conn
            self._discard(conn)

    def release(self, conn: PgConnection) -> None:
        """Take a connection back; never waits (a needed reset runs in the background)."""
        if (
            self._closed
            or conn.is_closed()
            or time.monotonic() - conn.opened_at > self._max_lifetime_s
        ):
            self._discard(conn)
            self._replenish()
        elif conn.take_clean():
            conn.idle_since = time.monotonic()
            self._idle.put(conn)
            if conn.pending_end and self._end_timer is None:
                self._end_timer = asyncio.get_running_loop().call_later(
                    END_DEFERRED_AFTER_S, self._end_deferred
                )
        else:
            self._spawn(self._reset_and_return(conn), conn)

    async def _reset_and_return(self, conn: PgConnection) -> None:
        async def reset() -> None:
            await conn.settle_cancel()
            await conn.reset()

        await self._return_after(conn, reset(), "resetting")

    async def _return_after(
        self, conn: PgConnection, tidying: Coroutine[Any, Any, object], what: str
    ) -> None:
        """Lend ``conn`` again once ``tidying`` is done; close it if that fails."""
        try:
            async with asyncio.timeout(RESET_TIMEOUT_S):
                await tidying
        except Exception as exc:
            if not conn.is_closed():
                logger.warning("%s a pooled connection failed (%r); closing it", what, exc)
            self._discard(conn)
            self._replenish()
            return
        if self._closed:
            self._discard(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.put(conn)

    def _end_deferred(self) -> None:
        """End the transactions left open on connections that have been idle since."""
        self._end_timer = None
        if self._closed:
            return
        now = time.monotonic()
        due = functools.partial(self._deferred_due, now=now)
        for conn in self._idle.remove_where(due):
            self._spawn(self._end_and_return(conn), conn)
        later = [c.idle_since for c in self._idle.items() if c.pending_end]
        if later:
            delay = max(0.001, min(later) + END_DEFERRED_AFTER_S - now)
            self._end_timer = asyncio.get_running_loop().call_later(delay, self._end_deferred)

    @staticmethod
    def _deferred_due(conn: PgConnection, now: float) -> bool:
        return bool(conn.pending_end) and now - conn.idle_since >= END_DEFERRED_AFTER_S

    async def _end_and_return(self, conn: PgConnection) -> None:
        await self._return_after(conn, conn.execute(conn.take_pending_end()), "ending a read on")

    def _discard(self, conn: PgConnection) -> None:
        self._size -= 1
        if not conn.is_closed():
            conn.terminate()

    def _replenish(self) -> None:
        """A connection left while callers wait for one: open another for them."""
        if self._closed or not self._idle.waiting() or self._size >= self._max_size:
            return
        self._spawn(self._reopen())

    async def _reopen(self) -> None:
        try:
            conn = await self._open_one()
        except Exception as exc:
            # The waiters time out on their own; the next release or acquire tries again.
            logger.info("opening a pooled connection failed: %r", exc)
            return
        conn.idle_since = time.monotonic()
        self._idle.put(conn)

    def _spawn(self, work: Coroutine[Any, Any, None], conn: PgConnection | None = None) -> None:
        """Run ``work`` in the background; ``conn``, which it holds, is closed with the pool."""
        task = asyncio.ensure_future(work)
        self._background[task] = conn
        task.add_done_callback(self._background.pop)

    async def _sweep(self, interval_s: float) -> None:
        """Close idle connections past their lifetime or idle limit; keep ``min_size`` open."""
        while True:
            await asyncio.sleep(interval_s)
            expired = functools.partial(self._expired, now=time.monotonic())
            for conn in self._idle.remove_where(expired):
                self._discard(conn)
            if self._size < self._min_size and not self._closed:
                await self._reopen()

    async def close(self) -> None:
        """Close the idle connections and refuse new acquires; lent ones close on release."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._end_timer is not None:
            self._end_timer.cancel()
        held = [conn for conn in self._background.values() if conn is not None]
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        idle = set(self._idle.items())
        for conn in held:
            # A task cancelled before it ran never closed the connection it was given.
            if not conn.is_closed() and conn not in idle:
                self._discard(conn)
        closing = []
        while self._idle.idle_count():
            conn = self._idle.take()
            self._size -= 1
            closing.append(conn.close(timeout=5))
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, Exception):
                logger.info("closing a pooled connection failed: %r", result)
