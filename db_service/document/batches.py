"""Cutting a MongoDB cursor into reply-sized batches of canonical Extended JSON.

A batch ends at a document count or a byte budget, whichever comes first, and always holds at
least one document, so a large document still travels; one larger than a whole reply may be is
refused (RESOURCE_EXHAUSTED) instead of breaking the gRPC message limit. Documents are fetched
from the server cursor one batch at a time: memory stays flat however many the query matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import PyMongoError

from db_service.document import codec
from db_service.document.errors import DocumentTooLarge

Cursor = AsyncCursor[dict[str, Any]] | AsyncCommandCursor[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How a stream is cut: ``documents`` / ``bytes`` per batch; ``max_bytes`` for one document."""

    documents: int
    bytes: int
    max_bytes: int


class Batch(NamedTuple):
    """Canonical Extended JSON documents; ``done`` on the last batch of a stream."""

    documents: list[str]
    done: bool


@dataclass(slots=True)
class StreamTally:
    """What a stream did so far: time spent waiting on the server, documents sent."""

    busy_s: float = 0.0
    documents: int = 0


async def cursor_batches(
    open_cursor: Callable[[], Awaitable[Cursor]],
    limits: BatchLimits,
    limit_s: float,
    tally: StreamTally,
) -> AsyncGenerator[Batch, None]:
    """Batches of the cursor ``open_cursor`` gives; the last one (maybe empty) has ``done``.

    ``limit_s`` bounds the whole stream, the caller's reading included, but only our waits on
    the server are cut short by it (TimeoutError), never the caller's own awaits.
    """
    deadline = asyncio.get_running_loop().time() + limit_s
    cursor: Cursor | None = None
    try:
        started = time.perf_counter()
        async with asyncio.timeout_at(deadline):
            cursor = await open_cursor()
        tally.busy_s += time.perf_counter() - started
        batch: list[str] = []
        size = 0
        while True:
            started = time.perf_counter()
            async with asyncio.timeout_at(deadline):
                documents = await cursor.to_list(limits.documents)
            tally.busy_s += time.perf_counter() - started
            if not documents:
                break
            for document in documents:
                # Canonical Extended JSON is ASCII (json.dumps escapes the rest): characters
                # are bytes.
                text = codec.dumps(document)
                if len(text) > limits.max_bytes:
                    raise DocumentTooLarge(
                        f"document {tally.documents} is {len(text)} bytes of Extended JSON,"
                        f" more than a reply may hold ({limits.max_bytes})"
                    )
                if batch and (size + len(text) > limits.bytes or len(batch) >= limits.documents):
                    yield Batch(batch, done=False)
                    batch, size = [], 0
                batch.append(text)
                size += len(text)
                tally.documents += 1
        yield Batch(batch, done=True)
    finally:
        if cursor is not None:
            with contextlib.suppress(PyMongoError):
                await cursor.close()
