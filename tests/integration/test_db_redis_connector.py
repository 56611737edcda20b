"""RedisConnector, the in-process Redis API, on the real test Redis (database 5)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from paca.db.v1 import key_value_service_pb2 as pb

from db_service.errors import DbUnavailable
from db_service.keyvalue import DataConflict
from db_service.keyvalue.connector import RedisConnector, create_redis_config
from db_service.nosql import NoSQLConnector
from paca_runtime.errors import InvalidArgument
from tests.conftest import eventually
from tests.integration.redis_helpers import flushed_redis, redis_test_url
from tests.integration.test_db_redis_streams import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
async def direct() -> AsyncIterator[redis.Redis]:
    async with flushed_redis(redis_test_url()) as client:
        yield client


@pytest.fixture
async def kv(direct: redis.Redis) -> AsyncIterator[RedisConnector]:
    async with RedisConnector(create_redis_config(redis_test_url(), pool_size=4)) as connector:
        yield connector


async def test_every_data_type_in_process(kv: RedisConnector, direct: redis.Redis) -> None:
    assert await kv.set("s", b"v")
    assert not await kv.set("s", b"w", only_if="absent")
    assert await kv.get("s") == b"v"
    assert await kv.mget(["s", "none"]) == [b"v", None]
    assert await kv.incr("n", 5) == 5
    assert await kv.hset("h", {"a": b"1"}) == 1
    assert await kv.hgetall("h") == {"a": b"1"}
    assert await kv.push("l", b"x", b"y") == 2
    assert await kv.pop("l") == b"x"
    assert await kv.lrange("l") == [b"y"]
    assert await kv.sadd("set", b"m") == 1
    assert await kv.smembers("set") == {b"m"}
    assert await kv.zadd("z", {b"a": 1.0, b"b": 2.0}) == 2
    assert await kv.zrange_by_score("z", low=1.5) == [(b"b", 2.0)]
    assert await kv.delete("s", "n") == 2
    assert await direct.exists("s", "n") == 0


async def test_expiry_and_transaction_in_process(kv: RedisConnector) -> None:
    await kv.set("t", b"v", ttl_s=0.1)
    assert 0 < await kv.ttl_ms("t") <= 100

    async def expired() -> bool:
        return await kv.get("t") is None

    await eventually(expired, timeout_s=5)
    results = await kv.pipeline(
        [
            pb.KeyValueCommand(incr=pb.IncrCommand(key="a")),
            pb.KeyValueCommand(incr=pb.IncrCommand(key="a")),
        ],
        transaction=True,
    )
    assert [r.integer for r in results] == [1, 2]


async def test_subscribe_block_receives_what_is_published_inside_it(kv: RedisConnector) -> None:
    channel = f"in-process-{uuid.uuid4().hex}"
    async with kv.subscribe([channel]) as messages:
        assert await kv.publish(channel, b"one") == 1
        assert await kv.publish(channel, b"two") == 1
        got = [await anext(messages), await anext(messages)]
    assert [(m.channel, m.data) for m in got] == [(channel, b"one"), (channel, b"two")]
    assert kv.stats().subscriptions == 0


async def test_errors_are_the_services_errors(kv: RedisConnector) -> None:
    await kv.set("s", b"v")
    with pytest.raises(DataConflict, match="WRONGTYPE"):
        await kv.push("s", b"x")
    with pytest.raises(InvalidArgument) as caught:
        await kv.get("")
    assert caught.value.field == "command.get.key"
    figures = {c.command: c for c in kv.stats().commands}
    assert figures["RPUSH"].errors == 1


async def test_a_redis_that_is_down_is_unavailable_and_the_password_stays_hidden() -> None:
    config = create_redis_config(f"redis://:hunter2@127.0.0.1:{closed_port()}/0")
    assert "hunter2" not in repr(config)
    async with RedisConnector(config) as kv:
        with pytest.raises(DbUnavailable) as caught:
            await kv.get("k")
    assert "hunter2" not in str(caught.value)


async def test_nosql_connector_picks_the_redis_engine_by_config_kind(direct: redis.Redis) -> None:
    async with NoSQLConnector(create_redis_config(redis_test_url())) as nosql:
        assert await nosql.key_value.set("k", b"v")
        assert await nosql.key_value.incr("n") == 1
        with pytest.raises(TypeError):
            nosql.documents  # noqa: B018
    assert await direct.get("k") == b"v"
    with pytest.raises(RuntimeError):
        nosql.key_value  # noqa: B018
