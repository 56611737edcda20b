"""The registry kept in a real db_service (SQLite): replicas and restarts see the same endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.errors import InvalidCall, UnknownEndpoint
from api_service.registry_store import DurableRegistry
from db_service import DatabaseSettings, DbApp, DbSettings
from paca_runtime.errors import Unavailable
from tests.integration.conftest import CuttableProxy, runtime_settings
from tests.integration.test_db_service import temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

Factory = Callable[..., Awaitable[DurableRegistry]]


@pytest.fixture
async def registries(db_app: DbApp) -> AsyncIterator[Factory]:
    opened: list[tuple[DurableRegistry, grpc.aio.Channel]] = []

    async def registry(
        address: str = db_app.server.bound_address, **kwargs: float
    ) -> DurableRegistry:
        channel = grpc.aio.insecure_channel(address)
        made = DurableRegistry(channel, timeout_s=1.0, **kwargs)  # type: ignore[arg-type]
        opened.append((made, channel))
        await made.open()
        return made

    try:
        yield registry
    finally:
        for made, channel in opened:
            await made.aclose()
            await channel.close()


def endpoint(name: str, path: str = "/v1") -> api_types_pb2.Endpoint:
    made = api_types_pb2.Endpoint(
        name=name, provider="acme", base_url="https://api.acme.test", path=path
    )
    made.auth.key_pool = "acme"
    made.cache.enabled = True
    made.cache.ttl.FromSeconds(30)
    return made


async def test_a_second_replica_sees_registrations_and_removals(registries: Factory) -> None:
    one, two = await registries(), await registries(refresh_s=3600)
    stored, created = await one.save(endpoint("acme.items"))
    assert created
    assert stored.create_time.seconds > 0
    # Not yet in two's memory: the call path reads it through from db_service once.
    fetched = await two.fetch("acme.items")
    assert fetched.cache.ttl.seconds == 30
    assert fetched.auth.key_pool == "acme"
    assert fetched.create_time == stored.create_time
    assert two.get("acme.items") == fetched  # now answered from memory

    replaced, created = await two.save(endpoint("acme.items", "/v2"))
    assert not created
    assert replaced.create_time == stored.create_time
    await one.refresh()
    assert one.get("acme.items").path == "/v2"

    await one.delete("acme.items")
    await two.refresh()
    assert "acme.items" not in two
    with pytest.raises(UnknownEndpoint):
        await two.fetch("acme.items")
    with pytest.raises(UnknownEndpoint):
        await one.delete("acme.items")


async def test_a_restarted_replica_loads_the_registry(registries: Factory) -> None:
    first = await registries()
    await first.save(endpoint("acme.a"))
    await first.save(endpoint("acme.b"))
    await first.aclose()
    restarted = await registries()
    assert [e.name for e in restarted.list()] == ["acme.a", "acme.b"]
    assert restarted.loaded.is_set()


async def test_bad_input_is_refused_and_stores_nothing(
    registries: Factory, db_stub: db_service_pb2_grpc.DbServiceStub
) -> None:
    registry = await registries()
    bad = endpoint("acme.bad")
    bad.base_url = "ftp://nope"
    with pytest.raises(InvalidCall, match=r"endpoint\.base_url"):
        await registry.save(bad)
    rows = await db_stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT COUNT(*) FROM api_endpoints", read_only=True)
    )
    assert rows.rows[0].values[0].int64_value == 0


async def test_changes_made_while_db_service_is_down_are_stored_when_it_is_back(
    registries: Factory, db_app: DbApp
) -> None:
    host, _, port = db_app.server.bound_address.rpartition(":")
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    other = await registries()
    await other.save(endpoint("acme.old"))
    cut = await registries(f"127.0.0.1:{proxy.port}", refresh_s=3600)
    assert cut.get("acme.old").name == "acme.old"
    await proxy.cut()
    _, created = await cut.save(endpoint("acme.new"))  # db_service is down: not refused
    assert created
    await cut.delete("acme.old")
    cut.pin(endpoint("acme.from-config"))
    assert cut.pending == 3
    assert (await cut.fetch("acme.new")).name == "acme.new"  # served from memory meanwhile
    with pytest.raises(UnknownEndpoint):
        await cut.delete("acme.never")
    await other.refresh()
    assert "acme.new" not in other

    await proxy.start()
    async with asyncio.timeout(10):
        # The channel reconnects with gRPC's backoff: there is no event to await.
        while cut.pending:
            with contextlib.suppress(Unavailable):
                await cut.refresh()
            await asyncio.sleep(0.1)
    await other.refresh()
    assert [e.name for e in other.list()] == ["acme.from-config", "acme.new"]
    await proxy.cut()


async def test_two_api_services_share_the_registry_and_a_config_file(
    db_app: DbApp, tmp_path: Path
) -> None:
    config = tmp_path / "endpoints.toml"
    config.write_text(
        '[[endpoints]]\nname = "cfg.ping"\nprovider = "cfg"\n'
        'base_url = "https://cfg.test"\npath = "/ping"\nmethod = "GET"\n'
    )
    apps: list[ApiApp] = []
    for i in range(2):
        settings = ApiSettings(
            listen="127.0.0.1:0",
            db_address=db_app.server.bound_address,
            calllog=CallLogSettings(spool_dir=tmp_path / f"spool{i}"),
            endpoints_file=str(config) if i == 0 else "",
            registry_refresh_s=3600,
        )
        apps.append(ApiApp(settings, runtime_settings(tmp_path / f"app{i}")))
        await apps[-1].start()
    try:
        async with (
            grpc.aio.insecure_channel(apps[0].server.bound_address) as first,
            grpc.aio.insecure_channel(apps[1].server.bound_address) as second,
        ):
            one = api_service_pb2_grpc.ApiServiceStub(first)
            two = api_service_pb2_grpc.ApiServiceStub(second)
            await one.RegisterEndpoint(
                api_service_pb2.RegisterEndpointRequest(endpoint=endpoint("acme.shared"))
            )
            for name in ("acme.shared", "cfg.ping"):
                reply = await two.GetEndpoint(api_service_pb2.GetEndpointRequest(name=name))
                assert reply.endpoint.name == name
            await two.RemoveEndpoint(api_service_pb2.RemoveEndpointRequest(name="acme.shared"))
            assert isinstance(apps[0].registry, DurableRegistry)
            await apps[0].registry.refresh()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await one.GetEndpoint(api_service_pb2.GetEndpointRequest(name="acme.shared"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for app in apps:
            await app.stop()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_the_registry_table_works_on_every_engine(dialect: str, tmp_path: Path) -> None:
    async with temporary_database(dialect, tmp_path) as url:
        settings = DbSettings(
            listen="127.0.0.1:0", databases=(DatabaseSettings("main", url),), pool_size=2
        )
        app = DbApp(settings, runtime_settings(tmp_path))
        await app.start()
        channel = grpc.aio.insecure_channel(app.server.bound_address)
        registry = DurableRegistry(channel, timeout_s=5.0)
        try:
            await registry.open()
            assert (await registry.save(endpoint("acme.x")))[1]
            assert not (await registry.save(endpoint("acme.x", "/v9")))[1]
            other = DurableRegistry(channel, timeout_s=5.0)
            assert (await other.fetch("acme.x")).path == "/v9"
            await other.delete("acme.x")
            await registry.refresh()
            assert len(registry) == 0
            assert registry.pending == 0
        finally:
            await registry.aclose()
            await channel.close()
            await app.stop()
