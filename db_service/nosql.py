"""In-process use of db_service's NoSQL engines, without a server: the seed's NoSQL API.

    config = create_mongodb_config(database="mydb")
    nosql = NoSQLConnector(config)
    await nosql.connect()
    await nosql.insert("users", [{"name": "ada"}])
    result = await nosql.find("users", {"name": "ada"})
    print(result.is_success, result.data)     # True [{'_id': ObjectId(...), 'name': 'ada'}]
    await nosql.disconnect()

``NoSQLConnector`` picks the engine by ``config.kind`` from :data:`ENGINES` ("mongodb", or "redis"
from create_redis_config, whose commands live on ``NoSQLConnector.key_value``), so one connector
type serves every NoSQL config. The document methods run on the same :class:`MongoBackend` as
DocumentService (limits, figures, error mapping), take and return Python values (BSON types:
ObjectId, datetime, Decimal128), and return a :class:`QueryResult` instead of raising for database
errors, as the SQL connector does; misuse (not connected, a method of another engine) raises.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from db_service.document import codec
from db_service.document.backend import MongoBackend
from db_service.document.batches import BatchLimits
from db_service.document.config import MongoDatabaseSettings, mongo_database
from db_service.facade import QueryResult
from db_service.keyvalue.connector import RedisConnector, create_redis_config
from paca_runtime.errors import StatusError

__all__ = [
    "ENGINES",
    "NoSQLConnector",
    "NoSQLEngine",
    "create_mongodb_config",
    "create_redis_config",
]

# One reply of find / aggregate at most, as DocumentService's defaults.
_LIMITS = BatchLimits(documents=10_000, bytes=3 * 1024 * 1024, max_bytes=3 * 1024 * 1024)


class NoSQLEngine(Protocol):
    """What NoSQLConnector needs of an engine: a name and a lifecycle."""

    name: str

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...


# config.kind -> engine factory (the factory takes the config).
ENGINES: dict[str, Callable[[Any], NoSQLEngine]] = {
    "mongodb": MongoBackend,
    "redis": RedisConnector,
}


def create_mongodb_config(
    database: str = "paca",
    *,
    host: str = "localhost",
    port: int = 27017,
    user: str = "",
    password: str = "",
    url: str | None = None,
    name: str = "main",
    pool_size: int = 10,
    timeout_s: float = 30.0,
    server_selection_timeout_s: float = 5.0,
) -> MongoDatabaseSettings:
    """A MongoDB database: ``url`` (its path replaced by ``database``) or host and port."""
    if url is None:
        credentials = ""
        if user:
            credentials = quote(user, safe="") + (
                f":{quote(password, safe='')}" if password else ""
            )
            credentials += "@"
        url = f"mongodb://{credentials}{host}:{port}/{quote(database, safe='')}"
    else:
        url = urlunsplit(urlsplit(url)._replace(path=f"/{database}"))
    return mongo_database(
        name,
        url,
        pool_size=pool_size,
        timeout_s=timeout_s,
        server_selection_timeout_s=server_selection_timeout_s,
        setting="create_mongodb_config",
    )


class NoSQLConnector:
    """One NoSQL database, in-process. Lifecycle: ``connect()`` once, calls, ``disconnect()``
    (idempotent); also an async context manager."""

    def __init__(self, config: Any) -> None:
        kind = getattr(config, "kind", None)
        if kind not in ENGINES:
            raise ValueError(f"config.kind: no NoSQL engine {kind!r}; known: {sorted(ENGINES)}")
        self.config = config
        self._engine: NoSQLEngine = ENGINES[kind](config)
        self._connected = False

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<NoSQLConnector {self._engine!r} {state}>"

    async def connect(self) -> None:
        await self._engine.open()
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False
        await self._engine.aclose()

    async def __aenter__(self) -> NoSQLConnector:
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
    def engine(self) -> NoSQLEngine:
        return self._engine

    @property
    def documents(self) -> MongoBackend:
        """The document engine itself (MongoDB configs only), for streams and indexes."""
        if not isinstance(self._engine, MongoBackend):
            raise TypeError(f"{self.config.kind} is not a document database")
        if not self._connected:
            raise RuntimeError("NoSQLConnector is not connected: call connect() first")
        return self._engine

    @property
    def key_value(self) -> RedisConnector:
        """The key-value engine itself (Redis configs only): strings, counters, hashes, lists,
        sets, sorted sets, pipelines, pub/sub; it raises db_service errors (see
        db_service.keyvalue.connector)."""
        if not isinstance(self._engine, RedisConnector):
            raise TypeError(f"{self.config.kind} is not a key-value database")
        if not self._connected:
            raise RuntimeError("NoSQLConnector is not connected: call connect() first")
        return self._engine

    async def _run(self, call: Callable[[MongoBackend], Awaitable[Any]]) -> QueryResult:
        engine = self.documents
        started = time.perf_counter()
        try:
            value = await call(engine)
        except StatusError as exc:
            return QueryResult(
                False,
                error=str(exc),
                error_code=exc.code.name,
                elapsed_ms=(time.perf_counter() - started) * 1000,
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if isinstance(value, QueryResult):
            value.elapsed_ms = elapsed_ms
            return value
        return QueryResult(True, value, elapsed_ms=elapsed_ms)

    async def find(
        self,
        collection: str,
        filter: Mapping[str, Any] | None = None,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] = (),
        limit: int = 0,
        skip: int = 0,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """Matching documents (at most 10,000; ``truncated`` says when more matched)."""

        async def call(engine: MongoBackend) -> QueryResult:
            found: list[dict[str, Any]] = []
            cap = min(limit, _LIMITS.documents) if limit else _LIMITS.documents + 1
            documents = engine.find(
                collection,
                filter=filter or {},
                projection=projection,
                sort=sort,
                limit=cap,
                skip=skip,
                limits=_LIMITS,
                timeout_s=timeout_s,
            )
            async for batch in documents:
                found += [_decode(text) for text in batch.documents]
            truncated = len(found) > _LIMITS.documents
            return QueryResult(True, found[: _LIMITS.documents], truncated=truncated)

        return await self._run(call)

    async def insert(
        self, collection: str, documents: Sequence[Mapping[str, Any]], *, ordered: bool = True
    ) -> QueryResult:
        """Inserts; ``data`` holds one ``{"_id": ...}`` per document, in order."""

        async def call(engine: MongoBackend) -> QueryResult:
            ids = await engine.insert(collection, [dict(d) for d in documents], ordered=ordered)
            return QueryResult(True, [{"_id": i} for i in ids], rows_affected=len(ids))

        return await self._run(call)

    async def update(
        self,
        collection: str,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        multi: bool = False,
        upsert: bool = False,
    ) -> QueryResult:
        """Applies update operators; ``rows_affected`` is the modified count."""

        async def call(engine: MongoBackend) -> QueryResult:
            result = await engine.update(
                collection, filter=filter, change=update, multi=multi, upsert=upsert
            )
            data = [] if result.upserted_id is None else [{"_id": result.upserted_id}]
            return QueryResult(True, data, rows_affected=result.modified)

        return await self._run(call)

    async def delete(
        self, collection: str, filter: Mapping[str, Any], *, multi: bool = False
    ) -> QueryResult:
        async def call(engine: MongoBackend) -> QueryResult:
            deleted = await engine.delete(collection, filter=filter, multi=multi)
            return QueryResult(True, rows_affected=deleted)

        return await self._run(call)

    async def count(self, collection: str, filter: Mapping[str, Any] | None = None) -> QueryResult:
        """``data`` is ``[{"count": n}]``."""

        async def call(engine: MongoBackend) -> QueryResult:
            return QueryResult(
                True, [{"count": await engine.count(collection, filter=filter or {})}]
            )

        return await self._run(call)

    async def aggregate(
        self, collection: str, pipeline: Sequence[Mapping[str, Any]]
    ) -> QueryResult:
        async def call(engine: MongoBackend) -> QueryResult:
            found: list[dict[str, Any]] = []
            async for batch in engine.aggregate(collection, pipeline, limits=_LIMITS):
                found += [_decode(text) for text in batch.documents]
            return QueryResult(True, found)

        return await self._run(call)


def _decode(text: str) -> dict[str, Any]:
    # Streams carry canonical Extended JSON, which decodes to exactly the stored BSON values.
    value = codec.loads(text, "document")
    assert isinstance(value, dict)
    return value
