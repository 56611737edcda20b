"""A db_service with one Redis database (db 5 of the test Redis, flushed around each test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import redis.asyncio as redis
from paca.db.v1 import key_value_service_pb2 as pb
from paca.db.v1 import key_value_service_pb2_grpc as pb_grpc

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.keyvalue import KeyValueSettings, RedisDatabaseSettings
from db_service.settings import ClientPolicy
from paca_runtime import RuntimeSettings
from tests.conftest import backing_url

# Only this test area uses database 5 of the shared test Redis, and flushes only it.
REDIS_DB = 5


def redis_test_url() -> str:
    base = backing_url("PACA_TEST_REDIS_URL")
    return urlunsplit(urlsplit(base)._replace(path=f"/{REDIS_DB}"))


@asynccontextmanager
async def flushed_redis(url: str) -> AsyncIterator[redis.Redis]:
    """A direct client on ``url``'s database, empty at the start and at the end."""
    client = redis.Redis.from_url(url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@asynccontextmanager
async def key_value_app(
    tmp_path: Path,
    url: str,
    *,
    runtime: RuntimeSettings | None = None,
    clients: tuple[ClientPolicy, ...] = (),
    **key_value: Any,
) -> AsyncIterator[DbApp]:
    """db_service on a real socket with Redis database ``cache`` at ``url``."""
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
        pool_size=2,
        clients=clients,
        key_value=KeyValueSettings(
            databases=(RedisDatabaseSettings.of("cache", url),), **{"pool_size": 8, **key_value}
        ),
    )
    app = DbApp(
        settings,
        runtime or RuntimeSettings(monitor_address="", state_dir=tmp_path, shutdown_grace_s=1.0),
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@asynccontextmanager
async def key_value_stub(app: DbApp) -> AsyncIterator[pb_grpc.KeyValueServiceStub]:
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        yield pb_grpc.KeyValueServiceStub(channel)


async def run(stub: pb_grpc.KeyValueServiceStub, **command: Any) -> pb.KeyValueResult:
    """One command on database ``cache``: ``await run(stub, get=pb.GetCommand(key="k"))``."""
    request = pb.CommandRequest(database="cache", command=pb.KeyValueCommand(**command))
    reply: pb.CommandResponse = await stub.Command(request, timeout=5)
    return reply.result


def kind(result: pb.KeyValueResult) -> str | None:
    return result.WhichOneof("result")
