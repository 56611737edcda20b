"""Failover for real: a PostgreSQL primary and streaming replica under a read/write load.

(a) the replica dies: no read fails (each retries once on the primary); (b) the primary dies:
writes fail fast with UNAVAILABLE, reads go on from the replica; (c) the replica is promoted:
writes resume by themselves on it. Every acknowledged write is present afterwards, and the
write-unavailability window is measured and printed (``-s`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from db_service import DbApp
from db_service.routing.routed import RoutedBackend
from db_service.routing.status import health_names
from tests.integration.conftest import PgPair, runtime_settings
from tests.integration.test_db_replica_routing import backend_of, routed_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WRITERS = 2
READERS = 3
# A write that hangs instead of failing shows up as this deadline being hit.
RPC_DEADLINE_S = 5.0


@dataclass
class Outcome:
    started: float
    ended: float
    code: grpc.StatusCode
    details: str = ""


@dataclass
class Load:
    """A few writer and reader coroutines recording every outcome with its time."""

    stub: db_service_pb2_grpc.DbServiceStub
    acknowledged: set[int] = field(default_factory=set)
    writes: list[Outcome] = field(default_factory=list)
    reads: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Notified after every call, so the test awaits progress instead of polling.
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _call(self, outcomes: list[Outcome], call: Callable[[], Awaitable[object]]) -> bool:
        started = time.monotonic()
        details = ""
        try:
            await call()
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        outcomes.append(Outcome(started, time.monotonic(), code, details))
        async with self.changed:
            self.changed.notify_all()
        if code != grpc.StatusCode.OK:
            # A client backs off after UNAVAILABLE instead of spinning.
            await asyncio.sleep(0.02)
        return bool(code == grpc.StatusCode.OK)

    async def writer(self) -> None:
        while not self.stop.is_set():
            item = next(self.ids)
            request = db_service_pb2.ExecuteRequest(
                sql="INSERT INTO items (id) VALUES ($1)",
                params=[values_pb2.Value(int64_value=item)],
            )
            if await self._call(
                self.writes, functools.partial(self.stub.Execute, request, timeout=RPC_DEADLINE_S)
            ):
                self.acknowledged.add(item)

    async def reader(self, builder: bool, token: str) -> None:
        # The token of the CREATE TABLE: no read reaches a replica that has not replayed it.
        query = db_service_pb2.QueryRequest(
            sql="SELECT count(*) FROM items", read_only=True, consistency_token=token
        )
        select = db_service_pb2.SelectRequest(
            select=db_types_pb2.Select(table="items", columns=["id"], limit=5),
            consistency_token=token,
        )
        while not self.stop.is_set():
            if builder:
                await self._call(self.reads, lambda: self.stub.Select(select, timeout=5))
            else:
                await self._call(self.reads, lambda: self.stub.Query(query, timeout=5))

    def failed(self, outcomes: list[Outcome], since: float) -> list[Outcome]:
        return [o for o in outcomes if o.started >= since and o.code != grpc.StatusCode.OK]

    def succeeded(self, outcomes: list[Outcome], since: float) -> list[Outcome]:
        return [o for o in outcomes if o.started >= since and o.code == grpc.StatusCode.OK]

    @contextlib.asynccontextmanager
    async def running(self, token: str) -> AsyncIterator[None]:
        """The writers and readers run inside the block and have stopped when it ends."""
        tasks = [asyncio.create_task(self.writer()) for _ in range(WRITERS)]
        tasks += [asyncio.create_task(self.reader(i == 0, token)) for i in range(READERS)]
        try:
            yield
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)

    async def progress(self, outcomes: list[Outcome], count: int) -> None:
        """Wait until ``count`` more calls succeeded (the load runs meanwhile)."""

        def ok() -> int:
            return sum(o.code == grpc.StatusCode.OK for o in outcomes)

        target = ok() + count
        async with asyncio.timeout(15), self.changed:
            await self.changed.wait_for(lambda: ok() >= target)


async def _health(channel: grpc.aio.Channel, name: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=name)
    )
    return int(reply.status)


async def _health_becomes(channel: grpc.aio.Channel, name: str, status: int) -> None:
    """Wait through grpc.health.v1 Watch (as a load balancer would) for ``status``."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=name))
    async with asyncio.timeout(10):
        async for reply in watch:
            if reply.status == status:
                watch.cancel()
                return


async def test_failover_under_load_loses_no_acknowledged_write(
    pg_pair: PgPair, tmp_path: Path
) -> None:
    app = DbApp(routed_settings(pg_pair), runtime_settings(tmp_path))
    await app.start()
    backend = backend_of(app)
    try:
        async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
            stub = db_service_pb2_grpc.DbServiceStub(channel)
            created = await stub.Execute(
                db_service_pb2.ExecuteRequest(sql="CREATE TABLE items (id bigint PRIMARY KEY)")
            )
            load = Load(stub)
            async with load.running(created.consistency_token):
                await run_phases(load, pg_pair, channel, backend)
        # No acknowledged write was lost: every id is on the new primary.
        stored = await pg_pair.fetchval(pg_pair.replica_port, "SELECT array_agg(id) FROM items")
        assert isinstance(stored, list)
        assert load.acknowledged - set(stored) == set()
    finally:
        await app.stop()


async def run_phases(
    load: Load, pg_pair: PgPair, channel: grpc.aio.Channel, backend: RoutedBackend
) -> None:
    """(a) kill the replica, (b) kill the primary, (c) promote the replica, under ``load``."""
    replicas = backend.replicas
    primary_host, replica_host = backend.hosts
    writes_name, reads_name = health_names("main")
    serving = health_pb2.HealthCheckResponse.SERVING
    await load.progress(load.reads, 30)
    assert replica_host.served > 0

    # (a) The replica dies: reads it was serving retry on the primary; none fails.
    phase_a = time.monotonic()
    await pg_pair.run("kill", "replica", str(pg_pair.directory))
    async with asyncio.timeout(10):
        await replicas.wait_for(lambda: not replica_host.usable)
    await load.progress(load.reads, 30)
    assert load.failed(load.reads, phase_a) == []
    assert load.failed(load.writes, phase_a) == []
    await pg_pair.run("start", "replica", str(pg_pair.directory))
    async with asyncio.timeout(10):
        await replicas.wait_for(lambda: replica_host.usable)
    # From here commits wait for the replica (as a cluster manager sets it while a
    # standby is healthy), so an acknowledged write survives losing the primary.
    await pg_pair.run("sync", "on", str(pg_pair.directory))
    await load.progress(load.writes, 10)

    # (b) The primary dies: writes fail fast with UNAVAILABLE, reads go on.
    await pg_pair.run("kill", "primary", str(pg_pair.directory))
    # pg_ctl returns once the server is gone: from here no write can succeed on it.
    phase_b = time.monotonic()
    async with asyncio.timeout(10):
        await replicas.wait_for(lambda: replicas.primary is None)
    await _health_becomes(channel, writes_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await _health(channel, reads_name) == serving
    await load.progress(load.reads, 20)
    assert load.failed(load.reads, phase_b) == []
    failed_writes = load.failed(load.writes, phase_b)
    assert failed_writes, "writes should fail while no primary is in rotation"
    assert {o.code for o in failed_writes} == {grpc.StatusCode.UNAVAILABLE}
    slowest_failure = max(o.ended - o.started for o in failed_writes)
    assert slowest_failure < 1.5, slowest_failure  # bounded by the acquire timeout

    # (c) Promote the replica: writes resume on it by themselves.
    promote = time.monotonic()
    await pg_pair.run("promote", str(pg_pair.directory))
    promoted = time.monotonic()
    await load.progress(load.writes, 10)
    assert replicas.primary is replica_host
    await _health_becomes(channel, writes_name, serving)
    load.stop.set()

    # The window: from the primary's death to the first write acknowledged after it.
    first_ok = min(o.ended for o in load.succeeded(load.writes, phase_b))
    window, failover = first_ok - phase_b, first_ok - promote
    print(
        f"\nwrite unavailability: {window:.3f} s from the primary's death to the first"
        f" acknowledged write = {promote - phase_b:.3f} s until the test promoted the"
        f" replica + {failover:.3f} s from `pg_ctl promote` to the first acknowledged"
        f" write (promote itself {promoted - promote:.3f} s); slowest refused write"
        f" {slowest_failure * 1000:.0f} ms; {len(failed_writes)} writes refused,"
        f" {len(load.acknowledged)} acknowledged, {len(load.reads)} reads, 0 failed"
    )
    assert failover < 3.0
    assert load.failed(load.reads, 0) == []
    assert primary_host.health.ejections >= 1
    assert replica_host.health.ejections >= 1
