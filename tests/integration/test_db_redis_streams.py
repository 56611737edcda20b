"""KeyValueService pub/sub, faults and permissions on real sockets: the test Redis, a closed port,
a server that never answers, and bearer tokens with db.read / db.write."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from paca.db.v1 import key_value_service_pb2 as pb
from paca.db.v1 import key_value_service_pb2_grpc as pb_grpc

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.settings import ClientPolicy
from paca_runtime import RuntimeSettings
from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings, TokenTable, token_digest
from tests.conftest import eventually
from tests.integration.redis_helpers import (
    flushed_redis,
    key_value_app,
    key_value_stub,
    kind,
    redis_test_url,
    run,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

READER, WRITER = "reader-token-5c1e", "writer-token-a0f9"
PASSWORD = "hunter2-redis"


@pytest.fixture
async def direct() -> AsyncIterator[redis.Redis]:
    async with flushed_redis(redis_test_url()) as client:
        yield client


@pytest.fixture
async def app(direct: redis.Redis, tmp_path: Path) -> AsyncIterator[DbApp]:
    async with key_value_app(tmp_path, redis_test_url()) as app:
        yield app


async def test_subscribe_streams_messages_in_order_and_unsubscribes_on_cancel(
    app: DbApp, direct: redis.Redis
) -> None:
    # Pub/sub channels are server-wide (not per database): unique names keep tests apart.
    channel, prefix = f"news-{uuid.uuid4().hex}", f"ev-{uuid.uuid4().hex}"
    async with key_value_stub(app) as stub:
        call = stub.Subscribe(
            pb.SubscribeRequest(database="cache", channels=[channel], patterns=[f"{prefix}.*"])
        )
        first = await call.read()
        assert isinstance(first, pb.SubscribeResponse)
        assert first.ready.subscriptions == 2
        sent = []
        for i in range(20):
            target = channel if i % 2 == 0 else f"{prefix}.{i}"
            reply = await stub.Publish(
                pb.PublishRequest(database="cache", channel=target, message=b"%d" % i), timeout=5
            )
            assert reply.receivers == 1
            sent.append((target, b"%d" % i))
        received = []
        for _ in range(20):
            item = await call.read()
            assert isinstance(item, pb.SubscribeResponse)
            received.append(item.message)
        assert [(m.channel, m.data) for m in received] == sent
        assert {m.pattern for m in received[1::2]} == {f"{prefix}.*"}
        assert {m.pattern for m in received[0::2]} == {""}
        call.cancel()

        async def unsubscribed() -> bool:
            counts = dict(await direct.pubsub_numsub(channel))
            return counts.get(channel.encode(), 0) == 0

        await eventually(unsubscribed, timeout_s=5)
        stats = (await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)).databases
        assert stats[0].subscriptions == 0
        assert stats[0].messages_delivered == 20


async def test_subscribe_without_channels_is_invalid(app: DbApp) -> None:
    async with key_value_stub(app) as stub:
        call = stub.Subscribe(pb.SubscribeRequest(database="cache"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_down_is_unavailable_at_once_without_the_password(tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    async with key_value_app(tmp_path, url) as app, key_value_stub(app) as stub:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await run(stub, get=pb.GetCommand(key="k"))
        assert time.perf_counter() - started < 1.0
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert PASSWORD not in (caught.value.details() or "")
        call = stub.Subscribe(pb.SubscribeRequest(database="cache", channels=["c"]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        stats = (await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)).databases
        assert PASSWORD not in str(stats)
        assert "REDACTED" in stats[0].target


async def test_caller_deadline_and_request_timeout_end_a_hanging_command(tmp_path: Path) -> None:
    """A server that accepts and never answers (a Redis stuck in a long script)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            key_value_app(tmp_path, f"redis://127.0.0.1:{port}/0") as app,
            key_value_stub(app) as stub,
        ):
            command = pb.KeyValueCommand(get=pb.GetCommand(key="k"))
            started = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Command(
                    pb.CommandRequest(database="cache", command=command), timeout=0.3
                )
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.perf_counter() - started < 1.0
            request = pb.CommandRequest(database="cache", command=command)
            request.timeout.FromMilliseconds(200)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Command(request, timeout=5)
            # The server's own status, not the client's deadline.
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "ran out of time" in (caught.value.details() or "")
    finally:
        server.close()
        await server.wait_closed()


def token_runtime(tmp_path: Path) -> RuntimeSettings:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f"""
[[token]]
name = "reader"
sha256 = "{token_digest(READER).hex()}"
scopes = ["db.read"]

[[token]]
name = "writer"
sha256 = "{token_digest(WRITER).hex()}"
scopes = ["db.read", "db.write"]
"""
    )
    return RuntimeSettings(
        monitor_address="",
        state_dir=tmp_path,
        shutdown_grace_s=1.0,
        security=SecuritySettings(tokens=TokenTable.load(path)),
    )


async def test_a_read_only_token_reads_and_subscribes_but_cannot_write(
    direct: redis.Redis, tmp_path: Path
) -> None:
    runtime = token_runtime(tmp_path)
    async with key_value_app(tmp_path, redis_test_url(), runtime=runtime) as app:
        address = app.server.bound_address
        async with (
            open_channel(address, SecuritySettings(service_token=READER)) as reading,
            open_channel(address, SecuritySettings(service_token=WRITER)) as writing,
        ):
            reader = pb_grpc.KeyValueServiceStub(reading)
            writer = pb_grpc.KeyValueServiceStub(writing)
            assert (await run(writer, set=pb.SetCommand(key="k", value=b"v"))).ok
            assert (await run(reader, get=pb.GetCommand(key="k"))).value == b"v"
            denied = [
                run(reader, set=pb.SetCommand(key="k", value=b"changed")),
                run(reader, incr=pb.IncrCommand(key="n")),
                reader.Pipeline(
                    pb.PipelineRequest(
                        database="cache",
                        commands=[
                            pb.KeyValueCommand(get=pb.GetCommand(key="k")),
                            pb.KeyValueCommand(delete=pb.DeleteKeysCommand(keys=["k"])),
                        ],
                    ),
                    timeout=5,
                ),
                reader.Publish(pb.PublishRequest(database="cache", channel="c"), timeout=5),
            ]
            for attempt in denied:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await attempt
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # The channel's token rides on streaming calls too.
            call = reader.Subscribe(pb.SubscribeRequest(database="cache", channels=["c"]))
            ready = await call.read()
            assert isinstance(ready, pb.SubscribeResponse)
            assert ready.ready.subscriptions == 1
            call.cancel()
    assert await direct.get("k") == b"v"
    assert await direct.exists("n") == 0


async def test_a_client_configured_read_only_cannot_write_with_a_write_scope(
    direct: redis.Redis, tmp_path: Path
) -> None:
    runtime = token_runtime(tmp_path)
    limited = (ClientPolicy("writer", read_only=True),)
    async with (
        key_value_app(tmp_path, redis_test_url(), runtime=runtime, clients=limited) as app,
        open_channel(app.server.bound_address, SecuritySettings(service_token=WRITER)) as channel,
    ):
        stub = pb_grpc.KeyValueServiceStub(channel)
        assert kind(await run(stub, get=pb.GetCommand(key="k"))) == "missing"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await run(stub, set=pb.SetCommand(key="k", value=b"v"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "read-only" in (caught.value.details() or "")
    assert await direct.exists("k") == 0


async def test_key_value_service_is_served_only_with_redis_databases(tmp_path: Path) -> None:
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
    )
    app = DbApp(settings, RuntimeSettings(monitor_address="", state_dir=tmp_path))
    await app.start()
    try:
        async with key_value_stub(app) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop()


async def test_monitor_figures_carry_redis_commands_and_pool(app: DbApp) -> None:
    async with key_value_stub(app) as stub:
        await run(stub, incr=pb.IncrCommand(key="n"))
        await run(stub, incr=pb.IncrCommand(key="n"))
    figures = {
        (m.name, tuple(sorted(m.labels.items()))): m for m in app.figures() if "redis" in m.name
    }
    incr = (("command", "INCR"), ("database", "cache"))
    assert figures[("redis_commands_total", incr)].counter == 2
    assert figures[("redis_command_errors_total", incr)].counter == 0
    assert figures[("redis_pool_idle", (("database", "cache"),))].gauge >= 1


async def test_a_read_only_database_refuses_writes_and_serves_reads(
    direct: redis.Redis, tmp_path: Path
) -> None:
    await direct.set("k", b"v")
    async with (
        key_value_app(tmp_path, f"{redis_test_url()}?read_only=true") as app,
        key_value_stub(app) as stub,
    ):
        assert (await run(stub, get=pb.GetCommand(key="k"))).value == b"v"
        for attempt in (
            run(stub, set=pb.SetCommand(key="k", value=b"changed")),
            stub.Publish(pb.PublishRequest(database="cache", channel="c"), timeout=5),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await attempt
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "read-only" in (caught.value.details() or "")
    assert await direct.get("k") == b"v"
