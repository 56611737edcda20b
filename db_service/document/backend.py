"""One named MongoDB database through pymongo's native asyncio client (``AsyncMongoClient``).

The pool, server selection, retries of reads and the wire protocol are the driver's. This module
maps db_service's operations onto the driver; each runs through :class:`Operations` (time limit,
span, figures, error translation) and sends ``maxTimeMS`` where the command takes it (reads,
aggregations, index builds), so the server stops work nobody waits for. Streams are cut into
reply-sized batches (:mod:`db_service.document.batches`); a read-only database refuses writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from bson.codec_options import DatetimeConversion
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from db_service.document.batches import (
    Batch,
    BatchLimits,
    Cursor,
)
from db_service.document.config import MongoDatabaseSettings
from db_service.document.errors import WriteRefused
from db_service.document.figures import DocumentFigures
from db_service.document.operations import Operations
from db_service.errors import DbUnavailable
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

Document = dict[str, Any]
_T = TypeVar("_T")


class UpdateResult(NamedTuple):
    matched: int
    modified: int
    # The new document's _id when an upsert inserted one.
    upserted_id: Any | None


def collection_name(name: str) -> str:
    """``name`` if MongoDB accepts it as a collection we may touch (not system.*)."""
    if not name:
        raise InvalidArgument("collection", "required")
    if "$" in name or "\x00" in name or name.startswith(("system.", ".")) or name.endswith("."):
        raise InvalidArgument("collection", f"not a usable collection name: {name!r}")
    return name


class MongoBackend:
    """A named MongoDB database and its driver client.

    Lifecycle: ``open()`` once (creates the client; it connects lazily, so db_service starts
    while MongoDB is down and calls answer UNAVAILABLE until it is back), ``aclose()``
    (idempotent). Every operation takes ``timeout_s``: None means the database's default.
    """

    kind = "mongodb"

    def __init__(self, settings: MongoDatabaseSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.figures = DocumentFigures(settings.name)
        self._client: AsyncMongoClient[Document] | None = None
        password = urlsplit(settings.url).password
        self._ops = Operations(settings, self.figures, (password,) if password else ())

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return (
            f"<MongoBackend db={self.name} target={self.settings.target} {state}"
            f" in_use={self.figures.pool.in_use}>"
        )

    async def open(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        self._client = AsyncMongoClient(
            s.url,
            maxPoolSize=s.pool_size,
            serverSelectionTimeoutMS=int(s.server_selection_timeout_s * 1000),
            connectTimeoutMS=int(s.connect_timeout_s * 1000),
            tz_aware=True,
            tzinfo=dt.UTC,
            uuidRepresentation="standard",
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            event_listeners=[self.figures.pool],
            appname="paca-db_service",
        )
        logger.info("MongoDB database %s at %s", self.name, s.target)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def ping(self, timeout_s: float) -> None:
        """The ``ping`` command within ``timeout_s`` (the health check); raises when MongoDB does
        not answer. An asyncio timeout, not pymongo's: see db_service.document.operations."""
        if self._client is None:
            raise DbUnavailable(f"MongoDB database {self.name!r} is not open")
        async with asyncio.timeout(timeout_s):
            await self._client.admin.command("ping")

    async def __aenter__(self) -> MongoBackend:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def collection(self, name: str) -> AsyncCollection[Document]:
        if self._client is None:
            raise DbUnavailable(f"MongoDB database {self.name!r} is not open")
        return self._client[self.settings.database][collection_name(name)]

    def _max_time_ms(self, timeout_s: float | None) -> int:
        """The server-side limit (maxTimeMS): the same as ours, at least 1 ms."""
        return max(1, int(self._ops.time_limit(timeout_s) * 1000))

    def _writable(self) -> None:
        if self.settings.read_only:
            raise WriteRefused(f"database {self.name!r} is read-only")

    def find(
        self,
        collection: str,
        *,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, Any]] = (),
        limit: int = 0,
        skip: int = 0,
        limits: BatchLimits,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[Batch, None]:
        target = self.collection(collection)

        async def open_cursor() -> Cursor:
            return target.find(
                filter,
                projection or None,
                sort=list(sort) or None,
                limit=limit,
                skip=skip,
                batch_size=limits.documents,
                max_time_ms=self._max_time_ms(timeout_s),
            )

        return self._ops.stream("find", collection, "filter", open_cursor, limits, timeout_s)

    async def find_one(
        self,
        collection: str,
        *,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, Any]] = (),
        skip: int = 0,
        timeout_s: float | None = None,
    ) -> Document | None:
        target = self.collection(collection)
        return await self._ops.call(
            "find_one",
            collection,
            "filter",
            timeout_s,
            lambda: target.find_one(
                filter,
                projection or None,
                sort=list(sort) or None,
                skip=skip,
                max_time_ms=self._max_time_ms(timeout_s),
            ),
            documents=lambda found: 0 if found is None else 1,
        )

    def aggregate(
        self,
        collection: str,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        allow_disk_use: bool = False,
        limits: BatchLimits,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[Batch, None]:
        target = self.collection(collection)
        if any(next(iter(stage)) in ("$out", "$merge") for stage in pipeline):
            self._writable()

        async def open_cursor() -> Cursor:
            return await target.aggregate(
                list(pipeline),
                allowDiskUse=allow_disk_use,
                batchSize=limits.documents,
                maxTimeMS=self._max_time_ms(timeout_s),
            )

        return self._ops.stream("aggregate", collection, "pipeline", open_cursor, limits, timeout_s)

    async def count(
        self,
        collection: str,
        *,
        filter: Mapping[str, Any],
        limit: int = 0,
        skip: int = 0,
        timeout_s: float | None = None,
    ) -> int:
        target = self.collection(collection)
        options: dict[str, Any] = {k: v for k, v in (("limit", limit), ("skip", skip)) if v}
        options["maxTimeMS"] = self._max_time_ms(timeout_s)
        return await self._ops.call(
            "count",
            collection,
            "filter",
            timeout_s,
            lambda: target.count_documents(filter, **options),
        )

    # ----------------------------------------------------------------- writes

    async def insert(
        self,
        collection: str,
        documents: Sequence[Document],
        *,
        ordered: bool = True,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """Inserts and returns the ``_id`` of each document, in order."""
        self._writable()
        target = self.collection(collection)

        async def run() -> list[Any]:
            if len(documents) == 1:
                return [(await target.insert_one(documents[0])).inserted_id]
            return list((await target.insert_many(documents, ordered=ordered)).inserted_ids)

        field = "documents[0]" if len(documents) == 1 else "documents"
        return await self._ops.call("insert", collection, field, timeout_s, run, documents=len)

    async def update(
        self,
        collection: str,
        *,
        filter: Mapping[str, Any],
        change: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        replace: bool = False,
        multi: bool = False,
        upsert: bool = False,
        timeout_s: float | None = None,
    ) -> UpdateResult:
        self._writable()
        target = self.collection(collection)

        async def run() -> UpdateResult:
            if replace:
                assert isinstance(change, Mapping)
                result = await target.replace_one(filter, change, upsert=upsert)
            elif multi:
                result = await target.update_many(filter, change, upsert=upsert)
            else:
                result = await target.update_one(filter, change, upsert=upsert)
            return UpdateResult(result.matched_count, result.modified_count, result.upserted_id)

        return await self._ops.call(
            "update",
            collection,
            "replacement" if replace else "update",
            timeout_s,
            run,
            documents=lambda r: r.modified + (r.upserted_id is not None),
        )

    async def delete(
        self,
        collection: str,
        *,
        filter: Mapping[str, Any],
        multi: bool = False,
        timeout_s: float | None = None,
    ) -> int:
        self._writable()
        target = self.collection(collection)

        async def run() -> int:
            if multi:
                return (await target.delete_many(filter)).deleted_count
            return (await target.delete_one(filter)).deleted_count

        return await self._ops.call(
            "delete", collection, "filter", timeout_s, run, documents=lambda n: n
        )

    # ---------------------------------------------------------------- indexes

    async def create_index(
        self,
        collection: str,
        keys: Sequence[tuple[str, Any]],
        *,
        name: str = "",
        unique: bool = False,
        sparse: bool = False,
        expire_after_s: int | None = None,
        partial_filter: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        self._writable()
        target = self.collection(collection)
        options: dict[str, Any] = {"maxTimeMS": self._max_time_ms(timeout_s)}
        if name:
            options["name"] = name
        if unique:
            options["unique"] = True
        if sparse:
            options["sparse"] = True
        if expire_after_s is not None:
            options["expireAfterSeconds"] = expire_after_s
        if partial_filter:
            options["partialFilterExpression"] = partial_filter
        return await self._ops.call(
            "create_index",
            collection,
            "keys",
            timeout_s,
            lambda: target.create_index(list(keys), **options),
        )

    async def list_indexes(
        self, collection: str, *, timeout_s: float | None = None
    ) -> Sequence[Mapping[str, Any]]:
        target = self.collection(collection)

        async def run() -> Sequence[Mapping[str, Any]]:
            return await (await target.list_indexes()).to_list()

        return await self._ops.call(
            "list_indexes",
            collection,
            "collection",
            timeout_s,
            run,
            documents=len,
            resource=("collection", collection),
        )

    async def drop_index(
        self, collection: str, name: str, *, timeout_s: float | None = None
    ) -> None:
        self._writable()
        target = self.collection(collection)
        if not name:
            raise InvalidArgument("name", "required")
        if name == "_id_":
            raise InvalidArgument("name", "the _id index cannot be dropped")
        await self._ops.call(
            "drop_index",
            collection,
            "name",
            timeout_s,
            lambda: target.drop_index(name),
            resource=("index", name),
        )
