"""Running one MongoDB operation as db_service promises on every engine.

Each operation (or whole stream) gets the time limit as an asyncio timeout around the driver
call, a DB client span, an entry in the database's figures, and its driver errors translated to
statuses without credentials (:mod:`db_service.document.errors`). pymongo's own operation
timeout (``pymongo.timeout``) is not used on purpose: under it the driver waits for a server as
long as the operation may take, so a stopped server would hold every caller until its deadline
instead of failing within serverSelectionTimeoutMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from bson.errors import BSONError
from opentelemetry.trace import Span
from pymongo.errors import PyMongoError

from db_service.document.batches import Batch, BatchLimits, Cursor, StreamTally, cursor_batches
from db_service.document.config import MongoDatabaseSettings
from db_service.document.errors import translate
from db_service.document.figures import DocumentFigures
from db_service.document.tracing import failed, operation_span
from db_service.errors import DbError, StatementTimeout

_T = TypeVar("_T")


class Operations:
    """Runs the operations of one database (MongoBackend holds one)."""

    def __init__(
        self, settings: MongoDatabaseSettings, figures: DocumentFigures, secrets: tuple[str, ...]
    ) -> None:
        self.settings = settings
        self.figures = figures
        # Literal secrets (the URL's password) scrubbed from every message.
        self.secrets = secrets

    def time_limit(self, timeout_s: float | None) -> float:
        """The operation's limit: the request's (capped by the caller's deadline) or the
        database's default."""
        return self.settings.timeout_s if timeout_s is None else timeout_s

    async def call(
        self,
        operation: str,
        collection: str,
        field: str,
        timeout_s: float | None,
        run: Callable[[], Awaitable[_T]],
        *,
        documents: Callable[[_T], int] = lambda _: 0,
        resource: tuple[str, str] = ("", ""),
    ) -> _T:
        """Runs ``run`` within the time limit; times, traces and translates it."""
        started = time.perf_counter()
        limit = self.time_limit(timeout_s)
        ok = False
        count = 0
        with operation_span(self.settings, operation, collection) as span:
            try:
                async with asyncio.timeout(limit):
                    result = await run()
                count = documents(result)
                ok = True
                return result
            except TimeoutError:
                raise self._failed(span, self._timed_out(operation, limit)) from None
            except (PyMongoError, BSONError) as exc:
                error = translate(
                    exc,
                    database=self.settings.name,
                    field=field,
                    secrets=self.secrets,
                    resource=resource,
                )
                raise self._failed(span, error) from exc
            finally:
                self.figures.record(
                    operation, time.perf_counter() - started, ok=ok, documents=count
                )

    @staticmethod
    def _failed(span: Span, error: DbError) -> DbError:
        failed(span, error, error.engine_code)
        return error

    def _timed_out(self, operation: str, limit_s: float) -> DbError:
        return StatementTimeout(
            f"MongoDB {operation} on {self.settings.name!r} ran out of time after {limit_s:.3f}s"
        )

    async def stream(
        self,
        operation: str,
        collection: str,
        field: str,
        open_cursor: Callable[[], Awaitable[Cursor]],
        limits: BatchLimits,
        timeout_s: float | None,
    ) -> AsyncGenerator[Batch, None]:
        """Streams a cursor in batches within the time limit; times and translates it."""
        tally = StreamTally()
        ok = False
        limit = self.time_limit(timeout_s)
        batches = cursor_batches(open_cursor, limits, limit, tally)
        with operation_span(self.settings, operation, collection) as span:
            try:
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        yield batch
                ok = True
            except TimeoutError:
                raise self._failed(span, self._timed_out(operation, limit)) from None
            except GeneratorExit:
                # The caller stopped reading: not an error of the engine.
                ok = True
                raise
            except DbError as exc:
                self._failed(span, exc)
                raise
            except (PyMongoError, BSONError) as exc:
                error = translate(
                    exc, database=self.settings.name, field=field, secrets=self.secrets
                )
                raise self._failed(span, error) from exc
            finally:
                self.figures.record(operation, tally.busy_s, ok=ok, documents=tally.documents)

    # ------------------------------------------------------------------ reads
