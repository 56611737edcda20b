"""One host of a database with replicas: its pool, its probe and what routing knows of it."""

from __future__ import annotations

from paca.db.v1 import db_types_pb2

from db_service.backends.base import Backend
from db_service.routing.health import HealthCounter
from db_service.routing.probes import Probe
from paca_runtime.redact import redact_url

# Weight of the newest statement in the latency average: about the last ten count.
EWMA_ALPHA = 0.2


class Host:
    """A host's backend (its pool), probe, health and live figures.

    ``primary`` is what the last successful probe found; whether the host takes the writes is
    decided by the replica set (at most one host does).
    """

    def __init__(self, backend: Backend, probe: Probe, *, fall: int, rise: int) -> None:
        self.backend = backend
        self.probe = probe
        self.health = HealthCounter(fall=fall, rise=rise)
        self.primary = False
        self.position = ""
        self.lag_s = 0.0
        self.lagging = False
        self.opened = False
        self.outstanding = 0
        self.latency_ewma_s = 0.0
        self.served = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return (
            f"<Host {self.url} role={self.role} state={db_types_pb2.HostState.Name(self.state)}"
            f" outstanding={self.outstanding} ewma_ms={self.latency_ewma_s * 1000:.2f}>"
        )

    @property
    def url(self) -> str:
        return redact_url(self.backend.url)

    @property
    def role(self) -> str:
        return "primary" if self.primary else "replica"

    @property
    def usable(self) -> bool:
        """In rotation: healthy by fall/rise and its pool is open."""
        return self.health.healthy and self.opened

    @property
    def state(self) -> db_types_pb2.HostState.ValueType:
        if not self.usable:
            return db_types_pb2.HOST_STATE_UNHEALTHY
        return db_types_pb2.HOST_STATE_LAGGING if self.lagging else db_types_pb2.HOST_STATE_HEALTHY

    def observe(self, latency_s: float) -> None:
        """Fold one statement's latency into the moving average."""
        if self.latency_ewma_s == 0.0:
            self.latency_ewma_s = latency_s
        else:
            self.latency_ewma_s += EWMA_ALPHA * (latency_s - self.latency_ewma_s)

    def figures(self, database: str) -> db_types_pb2.HostHealth:
        return db_types_pb2.HostHealth(
            database=database,
            host=self.url,
            role=self.role,
            state=self.state,
            consecutive_failures=self.health.failures,
            consecutive_successes=self.health.successes,
            lag_s=self.lag_s,
            latency_ewma_ms=self.latency_ewma_s * 1000,
            outstanding=self.outstanding,
            served=self.served,
            ejections=self.health.ejections,
            position=self.position,
        )
