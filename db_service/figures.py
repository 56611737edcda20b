"""Pool and query figures of one database: acquire waits, pool efficiency, latency per statement.

Percentiles come from the most recent samples (a bounded ring per series), so a figure reflects
current behaviour and memory stays flat however long the process runs. Statements are grouped by
fingerprint: the SQL with literals replaced by ``?``, comments dropped and whitespace collapsed, so
``WHERE id = 1`` and ``WHERE id = 2`` count as one shape. The number of fingerprints is capped;
shapes past the cap count under ``(other)`` so SQL built with inlined values cannot grow memory.

Written here rather than with prometheus_client: the monitor takes protobuf figures, and these
need per-fingerprint percentiles over a recent window, which histograms with fixed buckets do
not give.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from paca.db.v1 import db_service_pb2
from paca.monitor.v1 import monitor_types_pb2

from paca_runtime.reporting import counter, gauge
from paca_runtime.semconv import sanitize_sql

OTHER: Final = "(other)"
SAMPLES: Final = 2048
MAX_FINGERPRINTS: Final = 200
# Shapes reported to the monitor (the busiest), to bound its series; GetStats has them all.
MONITOR_FINGERPRINTS: Final = 20
# Distinct SQL texts whose series is remembered (a dict lookup instead of the regexes).
_CACHE_SIZE: Final = 4096

# Applied to ``sanitize_sql``'s output, whose literals are already ``?``: placeholders, keyword
# literals and a sign before a number become ``?`` too, and lists of them ``(?+)``.
_PLACEHOLDER = re.compile(r"\$\d+|%s|\b(?:TRUE|FALSE|NULL)\b|(?<![\w$?)\]])-\?", re.IGNORECASE)
_LISTS = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")


def fingerprint(sql: str) -> str:
    """The shape of a statement: literals and placeholders as ``?``, IN lists as ``(?+)``,
    comments dropped. Literals are found by ``paca_runtime.semconv.sanitize_sql`` (as for
    ``db.query.text``), which knows each engine's quoting and escapes."""
    return _LISTS.sub("(?+)", _PLACEHOLDER.sub("?", sanitize_sql(sql)))


class Samples:
    """The latest ``size`` values of a series, for percentiles."""

    __slots__ = ("_values",)

    def __init__(self, size: int = SAMPLES) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: float) -> None:
        self._values.append(value)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100, nearest rank) of the samples; 0.0 when empty."""
        if not self._values:
            return 0.0
        ordered = sorted(self._values)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank]

    def maximum(self) -> float:
        return max(self._values, default=0.0)


@dataclass(slots=True)
class _Series:
    calls: int = 0
    errors: int = 0
    latency_s: Samples = field(default_factory=Samples)


class DbFigures:
    """Figures of one database; engines record into it, GetStats and the monitor read it."""

    def __init__(self, database: str, *, max_fingerprints: int = MAX_FINGERPRINTS) -> None:
        self.database = database
        self.max_fingerprints = max_fingerprints
        self.acquires = 0
        self.acquires_without_wait = 0
        self.acquire_timeouts = 0
        self.connections_discarded = 0
        self.transactions_open = 0
        self.acquire_wait_s = Samples()
        # Every statement's latency, whatever its shape (PoolStats.query_p95_ms).
        self.latency_s = Samples()
        self._series: dict[str, _Series] = {}
        # The series of each SQL text seen lately: one dict lookup per statement rather than
        # the fingerprint's regexes. A shape counted under OTHER stays there (series are
        # never dropped), so remembering the series is the same as remembering the shape.
        self._by_sql: dict[str, _Series] = {}

    def __repr__(self) -> str:
        return (
            f"<DbFigures db={self.database} acquires={self.acquires} "
            f"fingerprints={len(self._series)}>"
        )

    def acquired(self, wait_s: float, *, waited: bool) -> None:
        """One connection handed out after ``wait_s``; ``waited``: none was free at the ask."""
        self.acquires += 1
        if not waited:
            self.acquires_without_wait += 1
        self.acquire_wait_s.add(wait_s)

    def query(self, sql: str, started: float, *, ok: bool) -> None:
        """One statement that began at ``started`` (``time.perf_counter``) ended now."""
        elapsed = time.perf_counter() - started
        series = self._by_sql.get(sql)
        if series is None:
            series = self._series_of(sql)
        series.calls += 1
        if not ok:
            series.errors += 1
        # Samples.add inlined: this runs once per statement.
        series.latency_s._values.append(elapsed)
        self.latency_s._values.append(elapsed)

    def _series_of(self, sql: str) -> _Series:
        shape = fingerprint(sql)
        series = self._series.get(shape)
        if series is None:
            if len(self._series) >= self.max_fingerprints:
                shape = OTHER
            series = self._series.setdefault(shape, _Series())
        if len(self._by_sql) >= _CACHE_SIZE:
            self._by_sql.clear()
        self._by_sql[sql] = series
        return series

    def query_p95_ms(self) -> float:
        """The p95 latency of recent statements of every shape."""
        return self.latency_s.percentile(95) * 1000

    def to_proto(self, max_size: int) -> db_service_pb2.DatabaseFigures:
        busiest = sorted(self._series.items(), key=lambda item: -item[1].calls)
        return db_service_pb2.DatabaseFigures(
            database=self.database,
            max_size=max_size,
            acquires=self.acquires,
            acquires_without_wait=self.acquires_without_wait,
            pool_efficiency=(self.acquires_without_wait / self.acquires if self.acquires else 1.0),
            acquire_wait_p50_ms=self.acquire_wait_s.percentile(50) * 1000,
            acquire_wait_p95_ms=self.acquire_wait_s.percentile(95) * 1000,
            acquire_wait_max_ms=self.acquire_wait_s.maximum() * 1000,
            acquire_timeouts=self.acquire_timeouts,
            connections_discarded=self.connections_discarded,
            transactions_open=self.transactions_open,
            queries=[
                db_service_pb2.QueryFingerprintFigures(
                    fingerprint=shape,
                    calls=series.calls,
                    errors=series.errors,
                    p50_ms=series.latency_s.percentile(50) * 1000,
                    p95_ms=series.latency_s.percentile(95) * 1000,
                    p99_ms=series.latency_s.percentile(99) * 1000,
                )
                for shape, series in busiest
            ],
        )


def database_figures(
    figures: db_service_pb2.DatabaseFigures, *, top: int = MONITOR_FINGERPRINTS
) -> Iterator[monitor_types_pb2.Metric]:
    """One database's figures as monitor metrics (labelled by database, and by fingerprint for
    query latency, for the ``top`` busiest shapes only: each is a series in the monitor)."""
    db = figures.database
    yield gauge("db_pool_max_size", figures.max_size, database=db)
    yield counter("db_pool_acquires_total", figures.acquires, database=db)
    yield counter("db_pool_acquire_timeouts_total", figures.acquire_timeouts, database=db)
    yield counter("db_pool_discarded_total", figures.connections_discarded, database=db)
    yield gauge("db_pool_efficiency", figures.pool_efficiency, database=db)
    yield gauge("db_pool_acquire_wait_p50_ms", figures.acquire_wait_p50_ms, database=db)
    yield gauge("db_pool_acquire_wait_p95_ms", figures.acquire_wait_p95_ms, database=db)
    yield gauge("db_transactions_open", figures.transactions_open, database=db)
    for query in figures.queries[:top]:
        labels = {"database": db, "fingerprint": query.fingerprint}
        yield counter("db_query_calls_total", query.calls, **labels)
        yield counter("db_query_errors_total", query.errors, **labels)
        yield gauge("db_query_latency_p50_ms", query.p50_ms, **labels)
        yield gauge("db_query_latency_p95_ms", query.p95_ms, **labels)
        yield gauge("db_query_latency_p99_ms", query.p99_ms, **labels)
