"""Figures of one MongoDB database: operations, latency, errors, and the driver's pool.

The pool is pymongo's own; its CMAP events (``pymongo.monitoring.ConnectionPoolListener``) are
the documented way to watch it, so the listener keeps counters only (it runs inline on every
checkout and must stay cheap). Latency is the time the engine waited on the server; for a
stream, the sum of its batch waits, not the time a slow reader took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paca.db.v1 import document_service_pb2 as pb
from pymongo import monitoring

from db_service.figures import Samples


@dataclass(slots=True)
class OperationFigures:
    calls: int = 0
    errors: int = 0
    documents: int = 0
    latency_s: Samples = field(default_factory=Samples)


class PoolFigures(monitoring.ConnectionPoolListener):
    """Counts connections as the driver's pools report them (over all servers)."""

    def __init__(self) -> None:
        self.created = 0
        self.closed = 0
        self.checked_out = 0
        self.checked_in = 0
        self.checkout_failures = 0
        self.checkout_wait_s = Samples()

    @property
    def in_use(self) -> int:
        return self.checked_out - self.checked_in

    @property
    def idle(self) -> int:
        return max(0, self.created - self.closed - self.in_use)

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        self.created += 1

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        self.closed += 1

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        self.checked_out += 1
        self.checkout_wait_s.add(event.duration or 0.0)

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        self.checked_in += 1

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        self.checkout_failures += 1

    # Events we do not count.
    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        pass

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        pass

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        pass

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        pass

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        pass

    def connection_check_out_started(
        self, event: monitoring.ConnectionCheckOutStartedEvent
    ) -> None:
        pass


class DocumentFigures:
    """Per-operation series and pool counters of one database."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.pool = PoolFigures()
        self.operations: dict[str, OperationFigures] = {}

    def __repr__(self) -> str:
        calls = sum(op.calls for op in self.operations.values())
        return f"<DocumentFigures db={self.database} calls={calls} in_use={self.pool.in_use}>"

    def record(self, operation: str, elapsed_s: float, *, ok: bool, documents: int = 0) -> None:
        series = self.operations.get(operation)
        if series is None:
            series = self.operations[operation] = OperationFigures()
        series.calls += 1
        series.errors += 0 if ok else 1
        series.documents += documents
        series.latency_s.add(elapsed_s)

    def to_proto(self, *, target: str, pool_size: int) -> pb.DocumentDatabaseStats:
        return pb.DocumentDatabaseStats(
            database=self.database,
            target=target,
            pool_size=pool_size,
            pool_in_use=self.pool.in_use,
            pool_idle=self.pool.idle,
            checkout_wait_p95_ms=self.pool.checkout_wait_s.percentile(95) * 1000,
            connections_created=self.pool.created,
            operations=[
                pb.DocumentOperationStats(
                    operation=name,
                    calls=series.calls,
                    errors=series.errors,
                    documents=series.documents,
                    latency_p50_ms=series.latency_s.percentile(50) * 1000,
                    latency_p95_ms=series.latency_s.percentile(95) * 1000,
                    latency_p99_ms=series.latency_s.percentile(99) * 1000,
                )
                for name, series in sorted(self.operations.items())
            ],
        )
