"""What the world sees of each database's hosts: grpc.health.v1 statuses and monitor figures.

Health service names: ``paca.db.v1.DbService/<database>`` is SERVING while a primary is in
rotation (writes can succeed) and ``paca.db.v1.DbService/<database>/read`` while any host is
(reads can succeed). Two names because the answer differs during a failover: a load balancer
that only sends reads keeps sending them, one that needs writes moves away. A database without
replicas is SERVING under both while the process serves.

Redis and MongoDB databases have one name each, ``paca.db.v1.KeyValueService/<database>`` and
``paca.db.v1.DocumentService/<database>``: their drivers find the server themselves (Sentinel,
Cluster, replica sets), so db_service only asks whether it answers. :class:`EngineHealth` sends
a PING (Redis) or ``ping`` command (MongoDB) every health interval, with the same fall/rise
counting as the hosts of SQL databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from paca.db.v1 import db_service_pb2, db_types_pb2
from paca.monitor.v1 import monitor_types_pb2

from db_service.backends.base import Backend
from db_service.routing.health import HealthCounter, Transition
from db_service.routing.replicaset import RoutingOptions
from db_service.routing.routed import RoutedBackend
from paca_runtime.reporting import counter, gauge

logger = logging.getLogger(__name__)

SERVICE = db_service_pb2.DESCRIPTOR.services_by_name["DbService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_names(database: str) -> tuple[str, str]:
    """The health service names of a database: (writes, reads)."""
    return f"{SERVICE}/{database}", f"{SERVICE}/{database}/read"


async def publish_health(health: health_aio.HealthServicer, backends: Iterable[Backend]) -> None:
    """Set each database's health statuses now and keep them current as hosts come and go.

    Call once, after the server started (``GrpcServer.stop`` turns them NOT_SERVING with the
    rest, and later changes are ignored from then on).
    """
    for backend in backends:
        writes, reads = health_names(backend.name)
        if not isinstance(backend, RoutedBackend):
            await health.set(writes, _SERVING)
            await health.set(reads, _SERVING)
            continue

        async def update(
            backend: RoutedBackend = backend, names: tuple[str, str] = (writes, reads)
        ) -> None:
            for name, up in zip(names, backend.replicas.serving(), strict=True):
                await health.set(name, _SERVING if up else _NOT_SERVING)

        backend.replicas.watch(update)
        await update()


def host_metrics(backends: Iterable[Backend]) -> Iterator[monitor_types_pb2.Metric]:
    """Per-host figures of the databases with replicas, for the monitor."""
    for backend in backends:
        if not isinstance(backend, RoutedBackend):
            continue
        for host in backend.hosts:
            labels = {"database": backend.name, "host": host.url, "role": host.role}
            yield gauge("db_host_up", float(host.usable), **labels)
            yield gauge(
                "db_host_lagging", float(host.state == db_types_pb2.HOST_STATE_LAGGING), **labels
            )
            yield gauge("db_host_lag_seconds", host.lag_s, **labels)
            yield gauge("db_host_outstanding", host.outstanding, **labels)
            yield gauge("db_host_latency_ewma_ms", host.latency_ewma_s * 1000, **labels)
            yield counter("db_host_served_total", host.served, **labels)
            yield counter("db_host_ejections_total", host.health.ejections, **labels)


class Pingable(Protocol):
    """A database whose engine answers a cheap probe (KeyValueStore, MongoBackend)."""

    name: str

    async def ping(self, timeout_s: float) -> None:
        """Return once the engine answered within ``timeout_s``; raise otherwise."""
        ...


class _Watched:
    def __init__(self, health_name: str, database: Pingable, options: RoutingOptions) -> None:
        self.health_name = health_name
        self.database = database
        self.counter = HealthCounter(fall=options.fall, rise=options.rise)


class EngineHealth:
    """Keeps the health status of each Redis and MongoDB database current by probing it.

    Lifecycle: ``start()`` once (probes every database and publishes the answers before it
    returns, then probes every ``interval_s`` in the background), ``aclose()`` (idempotent).
    A probe may take up to ``timeout_s``; all databases are probed at once, so one that hangs
    delays no other.
    """

    def __init__(self, health: health_aio.HealthServicer, options: RoutingOptions) -> None:
        self.health = health
        self.options = options
        self._watched: list[_Watched] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        up = sum(w.counter.healthy for w in self._watched)
        return f"<EngineHealth databases={len(self._watched)} serving={up}>"

    async def start(self, services: Mapping[str, Iterable[Pingable]]) -> None:
        """Probe the databases of each service (full name → its databases) from now on."""
        self._watched = [
            _Watched(f"{service}/{database.name}", database, self.options)
            for service, databases in services.items()
            for database in databases
        ]
        if not self._watched:
            return
        # The first probe decides, as it does for the hosts of SQL databases.
        for watched, ok in zip(
            self._watched, await asyncio.gather(*map(self._probe, self._watched)), strict=True
        ):
            watched.counter.healthy = ok
            if not ok:
                logger.warning("%s is not answering: NOT_SERVING", watched.health_name)
            await self._publish(watched)
        self._task = asyncio.create_task(self._run(), name="engine-health")

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self, watched: _Watched) -> bool:
        try:
            await watched.database.ping(self.options.timeout_s)
        except Exception as exc:
            # The type only: driver messages may name hosts and users, never worth the risk.
            logger.debug("%s: probe failed (%s)", watched.health_name, type(exc).__name__)
            return False
        return True

    async def _publish(self, watched: _Watched) -> None:
        up = watched.counter.healthy
        await self.health.set(watched.health_name, _SERVING if up else _NOT_SERVING)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.interval_s):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            answers = await asyncio.gather(*map(self._probe, self._watched))
            for watched, ok in zip(self._watched, answers, strict=True):
                counter = watched.counter
                change = counter.success(probe=True) if ok else counter.failure()
                if change is Transition.NONE:
                    continue
                logger.warning(
                    "%s is %s", watched.health_name, "back" if ok else "not answering: NOT_SERVING"
                )
                await self._publish(watched)
