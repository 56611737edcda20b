"""Redis and MongoDB databases as grpc.health.v1 service names, probed on real sockets: the test
Redis and MongoDB-protocol server, a closed port, and a TCP relay that is killed mid-test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.document.config import mongo_database
from db_service.keyvalue import KeyValueSettings, RedisDatabaseSettings
from tests.integration.conftest import runtime_settings
from tests.integration.redis_helpers import redis_test_url
from tests.integration.test_db_mongo import database_url
from tests.integration.test_db_mongo_faults import Relay
from tests.integration.test_db_redis_streams import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

KEY_VALUE, DOCUMENT = "paca.db.v1.KeyValueService", "paca.db.v1.DocumentService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def relay_to(url: str, default_port: int) -> Relay:
    parts = urlsplit(url)
    return Relay(parts.hostname or "127.0.0.1", parts.port or default_port)


@pytest.fixture
async def relays(mongodb_url: str) -> AsyncIterator[tuple[Relay, Relay]]:
    """TCP relays to the test Redis and the test MongoDB server."""
    redis_relay = await relay_to(redis_test_url(), 6379).start()
    mongo_relay = await relay_to(mongodb_url, 27017).start()
    try:
        yield redis_relay, mongo_relay
    finally:
        await redis_relay.close()
        await mongo_relay.close()


@pytest.fixture
async def app(
    tmp_path: Path, mongodb_url: str, relays: tuple[Relay, Relay]
) -> AsyncIterator[DbApp]:
    redis_relay, mongo_relay = relays
    gone = closed_port()
    app = DbApp(
        DbSettings(
            listen="127.0.0.1:0",
            databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
            pool_size=2,
            key_value=KeyValueSettings(
                databases=(
                    RedisDatabaseSettings.of("cache", redis_test_url()),
                    RedisDatabaseSettings.of("gone", f"redis://127.0.0.1:{gone}/0"),
                    RedisDatabaseSettings.of("relayed", f"redis://127.0.0.1:{redis_relay.port}/5"),
                ),
                pool_size=2,
            ),
            mongo=(
                mongo_database("docs", database_url(mongodb_url, "health_docs")),
                mongo_database("gone", f"mongodb://127.0.0.1:{gone}/health_gone"),
                mongo_database("relayed", mongo_relay.url("health_relayed")),
            ),
            health_interval_s=0.1,
            health_timeout_s=0.5,
            health_fall=1,
        ),
        runtime_settings(tmp_path),
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def test_each_redis_and_mongo_database_is_a_health_service_name_from_the_start(
    app: DbApp,
) -> None:
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert await status(stub, f"{KEY_VALUE}/cache") == SERVING
        assert await status(stub, f"{KEY_VALUE}/relayed") == SERVING
        assert await status(stub, f"{KEY_VALUE}/gone") == NOT_SERVING
        assert await status(stub, f"{DOCUMENT}/docs") == SERVING
        assert await status(stub, f"{DOCUMENT}/relayed") == SERVING
        assert await status(stub, f"{DOCUMENT}/gone") == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await status(stub, f"{KEY_VALUE}/docs")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_database_whose_server_goes_away_turns_not_serving_and_others_stay(
    app: DbApp, relays: tuple[Relay, Relay]
) -> None:
    async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service, relay in zip((KEY_VALUE, DOCUMENT), relays, strict=True):
            name = f"{service}/relayed"
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=name))
            first = await watch.read()
            assert isinstance(first, health_pb2.HealthCheckResponse)
            assert first.status == SERVING
            await relay.close()
            # Watch sends changes only: the next answer is the probe noticing the loss.
            changed = await watch.read()
            assert isinstance(changed, health_pb2.HealthCheckResponse)
            assert changed.status == NOT_SERVING
            watch.cancel()
        assert await status(stub, f"{KEY_VALUE}/cache") == SERVING
        assert await status(stub, f"{DOCUMENT}/docs") == SERVING
