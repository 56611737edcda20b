"""Report intake: the last report of every service instance and whether it is still alive.

An instance is keyed by ``(service, instance)``. Its state is judged when asked, against an
injectable monotonic clock, so nothing needs a timer to turn an instance DOWN::

    report ──▶ UP ──(no report for down_after_s)──▶ DOWN ──report──▶ UP
                │
                └──(report with final set)──▶ STOPPED ──report──▶ UP   (restarted)

A report is validated whole before anything is stored: a bad one raises
:class:`~paca_runtime.errors.InvalidArgument` naming the field and leaves the registry as it was.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from google.protobuf import timestamp_pb2
from paca.monitor.v1 import monitor_service_pb2, monitor_types_pb2

from paca_runtime.errors import InvalidArgument

Clock = Callable[[], float]
State: TypeAlias = monitor_types_pb2.ServiceState.ValueType

UP: Final = monitor_types_pb2.SERVICE_STATE_UP
STOPPED: Final = monitor_types_pb2.SERVICE_STATE_STOPPED
DOWN: Final = monitor_types_pb2.SERVICE_STATE_DOWN

# Prometheus' data model, since every reported metric is re-exposed on /metrics.
METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The monitor adds these to every re-exposed metric; a reported one would be ambiguous.
RESERVED_LABELS: Final = frozenset({"service", "instance"})


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """The last report of one instance, as received.

    Attributes:
        service: Service name, e.g. "api_service".
        instance: Instance id, unique per process.
        pid: Process id on this host; 0 when not reported.
        address: gRPC address the instance serves on.
        metrics: The reported figures; treat as read-only.
        received_s: When the report arrived, on the registry's monotonic clock.
        received_time: When the report arrived, wall time, for display.
        final: The instance said this was its last report.
    """

    service: str
    instance: str
    pid: int
    address: str
    metrics: tuple[monitor_types_pb2.Metric, ...]
    received_s: float
    received_time: timestamp_pb2.Timestamp
    final: bool


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """An instance's last report judged at one moment."""

    record: InstanceRecord
    state: State
    age_s: float


class ServiceRegistry:
    """Keeps the last report per instance and judges liveness.

    Not thread-safe: used from the event loop only.

    Args:
        down_after_s: An instance whose last report is older than this is DOWN.
        clock: Monotonic seconds.
        wall_clock: Seconds since the epoch, only for display.
    """

    def __init__(
        self,
        down_after_s: float,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if down_after_s <= 0:
            raise ValueError(f"down_after_s must be > 0, got {down_after_s}")
        self.down_after_s = down_after_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._records: dict[tuple[str, str], InstanceRecord] = {}

    def __repr__(self) -> str:
        counts = {UP: 0, STOPPED: 0, DOWN: 0}
        for status in self.statuses():
            counts[status.state] += 1
        return (
            f"<ServiceRegistry instances={len(self._records)} up={counts[UP]} "
            f"stopped={counts[STOPPED]} down={counts[DOWN]}>"
        )

    def record(self, report: monitor_service_pb2.ReportRequest) -> InstanceRecord:
        """Store a report, replacing the instance's previous one.

        Raises:
            InvalidArgument: The report is malformed; nothing was stored.
        """
        validate_report(report)
        received_time = timestamp_pb2.Timestamp()
        received_time.FromNanoseconds(int(self._wall_clock() * 1e9))
        record = InstanceRecord(
            service=report.service,
            instance=report.instance,
            pid=report.pid,
            address=report.address,
            metrics=tuple(_copy(metric) for metric in report.metrics),
            received_s=self._clock(),
            received_time=received_time,
            final=report.final,
        )
        self._records[(record.service, record.instance)] = record
        return record

    def statuses(self) -> list[InstanceStatus]:
        """Every known instance judged now, sorted by service, then instance."""
        now = self._clock()
        return [self._judge(self._records[key], now) for key in sorted(self._records)]

    def live_pids(self) -> set[int]:
        """Process ids of the instances that are UP, for sampling their processes."""
        return {
            status.record.pid
            for status in self.statuses()
            if status.state == UP and status.record.pid > 0
        }

    def _judge(self, record: InstanceRecord, now: float) -> InstanceStatus:
        age_s = max(0.0, now - record.received_s)
        if record.final:
            state: State = STOPPED
        elif age_s > self.down_after_s:
            state = DOWN
        else:
            state = UP
        return InstanceStatus(record=record, state=state, age_s=age_s)


def validate_report(report: monitor_service_pb2.ReportRequest) -> None:
    """Check a report against the contract and what ``/metrics`` can expose.

    Raises:
        InvalidArgument: Naming the first offending field, e.g. ``metrics[2].name``.
    """
    if not report.service.strip():
        raise InvalidArgument("service", "required")
    if not report.instance.strip():
        raise InvalidArgument("instance", "required")
    if report.pid < 0:
        raise InvalidArgument("pid", f"must be >= 0, got {report.pid}")
    kinds: dict[str, tuple[str, int]] = {}
    series: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for index, metric in enumerate(report.metrics):
        field = f"metrics[{index}]"
        kind = _validate_metric(field, metric)
        first_kind, first_index = kinds.setdefault(metric.name, (kind, index))
        if first_kind != kind:
            raise InvalidArgument(
                f"{field}.name",
                f"{metric.name!r} is a {first_kind} in metrics[{first_index}], not a {kind}",
            )
        key = (metric.name, tuple(sorted(metric.labels.items())))
        first_index = series.setdefault(key, index)
        if first_index != index:
            raise InvalidArgument(field, f"same name and labels as metrics[{first_index}]")


def _validate_metric(field: str, metric: monitor_types_pb2.Metric) -> str:
    if not METRIC_NAME.fullmatch(metric.name):
        raise InvalidArgument(
            f"{field}.name", f"{metric.name!r} does not match {METRIC_NAME.pattern}"
        )
    for label in metric.labels:
        if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise InvalidArgument(
                f"{field}.labels",
                f"{label!r} does not match {LABEL_NAME.pattern} or starts with __",
            )
        if label in RESERVED_LABELS:
            raise InvalidArgument(f"{field}.labels", f"{label!r} is added by the monitor")
    kind = metric.WhichOneof("value")
    if kind is None:
        raise InvalidArgument(f"{field}.value", "one of gauge, counter, histogram is required")
    if kind == "histogram" and "le" in metric.labels:
        raise InvalidArgument(f"{field}.labels", "'le' is the bucket label of a histogram")
    if kind == "counter" and (math.isnan(metric.counter) or metric.counter < 0):
        raise InvalidArgument(f"{field}.counter", f"must be >= 0, got {metric.counter}")
    if kind == "histogram":
        _validate_histogram(f"{field}.histogram", metric.histogram)
    return kind


def _validate_histogram(field: str, histogram: monitor_types_pb2.Histogram) -> None:
    bounds = list(histogram.bounds)
    if any(not math.isfinite(bound) for bound in bounds):
        raise InvalidArgument(f"{field}.bounds", "must be finite; +Inf is implicit")
    if any(lower >= upper for lower, upper in itertools.pairwise(bounds)):
        raise InvalidArgument(f"{field}.bounds", "must be strictly ascending")
    if len(histogram.counts) != len(bounds) + 1:
        raise InvalidArgument(
            f"{field}.counts",
            f"must have len(bounds) + 1 = {len(bounds) + 1} entries, got {len(histogram.counts)}",
        )


def _copy(metric: monitor_types_pb2.Metric) -> monitor_types_pb2.Metric:
    # The request belongs to gRPC; keep a copy that nobody else mutates.
    copied = monitor_types_pb2.Metric()
    copied.CopyFrom(metric)
    return copied
