"""Alert evaluation: each rule over the figures of one moment, and each alert's lifecycle.

Every series a rule matches (one per label set) is its own alert, keyed by rule and labels, so
an alert is raised once however often its condition is seen (deduplication) and each service,
core or database resolves on its own::

    holds ──▶ PENDING ──(holds for for_s)──▶ FIRING ──(stops holding, or series gone)──▶ RESOLVED
      │          │
      │          └──(stops holding: forgotten, nothing sent)
      └──(for_s = 0)──▶ FIRING at once

Only the changes to FIRING and to RESOLVED are returned for delivery. Windows (``increase``,
``rate``, ``ratio``, ``quantile`` over ``window_s``) compare the latest reading with one kept
from about ``window_s`` earlier; the engine keeps, per series, only the readings inside the
window plus the one just before it. Time is an injectable monotonic clock, so tests move it
instead of waiting for ``for_s`` to pass.

Not thread-safe: the monitor evaluates on its event loop after each sample.
"""

from __future__ import annotations

import hashlib
import logging
import math
import string
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from google.protobuf import timestamp_pb2
from paca.monitor.v1 import monitor_types_pb2

from monitor.figures import (
    Buckets,
    FigureTable,
    SeriesKey,
    bucket_increase,
    histogram_quantile,
)
from monitor.rules import AlertRule

logger = logging.getLogger(__name__)

Alert = monitor_types_pb2.Alert
AlertStateValue: TypeAlias = monitor_types_pb2.AlertState.ValueType
Clock = Callable[[], float]
_Reading: TypeAlias = float | tuple[float, float] | Buckets
_Key: TypeAlias = tuple[str, SeriesKey]
_R = TypeVar("_R", float, tuple[float, float], Buckets)

PENDING = monitor_types_pb2.ALERT_STATE_PENDING
FIRING = monitor_types_pb2.ALERT_STATE_FIRING
RESOLVED = monitor_types_pb2.ALERT_STATE_RESOLVED


@dataclass(slots=True)
class _Tracked:
    """An alert that is pending or firing."""

    rule: AlertRule
    labels: SeriesKey
    state: AlertStateValue
    holds_since_s: float
    since: timestamp_pb2.Timestamp
    value: float


@dataclass(slots=True)
class _History:
    readings: deque[tuple[float, _Reading]] = field(default_factory=deque)


class AlertEngine:
    """Evaluates rules and tracks the alerts they raise.

    Args:
        rules: The rules, names unique.
        clock: Monotonic seconds, for ``for_s`` and windows.
        wall_clock: Seconds since the epoch, only for the ``since`` of alerts.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.rules = tuple(rules)
        self.evaluations = 0
        self._clock = clock
        self._wall_clock = wall_clock
        self._tracked: dict[_Key, _Tracked] = {}
        self._history: dict[_Key, _History] = {}

    def __repr__(self) -> str:
        firing = sum(1 for alert in self._tracked.values() if alert.state == FIRING)
        return (
            f"<AlertEngine rules={len(self.rules)} pending={len(self._tracked) - firing} "
            f"firing={firing} evaluations={self.evaluations}>"
        )

    def evaluate(self, table: FigureTable) -> list[Alert]:
        """Evaluate every rule now; returns the alerts that started firing or resolved."""
        now = self._clock()
        changes: list[Alert] = []
        for rule in self.rules:
            try:
                values = self._reduce(rule, table, now)
            except Exception:  # one broken rule must not stop the others
                logger.exception("alert rule %s could not be evaluated", rule.name)
                continue
            changes.extend(self._advance(rule, values, now))
        self.evaluations += 1
        return changes

    def active(self) -> list[Alert]:
        """Alerts pending or firing now, most severe first, then by rule and labels."""
        tracked = sorted(
            self._tracked.values(),
            key=lambda alert: (-alert.rule.severity, alert.rule.name, alert.labels),
        )
        return [_message(alert) for alert in tracked]

    def _advance(self, rule: AlertRule, values: dict[SeriesKey, float], now: float) -> list[Alert]:
        changes = []
        for labels, value in values.items():
            key = (rule.name, labels)
            tracked = self._tracked.get(key)
            if not rule.holds(value):
                if tracked is not None:
                    del self._tracked[key]
                    if tracked.state == FIRING:
                        changes.append(self._change(tracked, RESOLVED, value))
                continue
            if tracked is None:
                tracked = _Tracked(rule, labels, PENDING, now, self._timestamp(), value)
                self._tracked[key] = tracked
            tracked.value = value
            if tracked.state == PENDING and now - tracked.holds_since_s >= rule.for_s:
                changes.append(self._change(tracked, FIRING, value))
        gone = [key for key in self._tracked if key[0] == rule.name and key[1] not in values]
        for key in gone:
            tracked = self._tracked.pop(key)
            if tracked.state == FIRING:
                changes.append(self._change(tracked, RESOLVED, math.nan))
        return changes

    def _change(self, tracked: _Tracked, state: AlertStateValue, value: float) -> Alert:
        tracked.state = state
        tracked.value = value
        tracked.since = self._timestamp()
        return _message(tracked)

    def _reduce(self, rule: AlertRule, table: FigureTable, now: float) -> dict[SeriesKey, float]:
        """One number per matching series, per the rule's function; no entry when unknown."""
        if rule.function == "value":
            return table.values(rule.metric, rule.match)
        if rule.function == "quantile":
            histograms = table.histograms(rule.metric, rule.match)
            if rule.window_s <= 0:
                return {key: histogram_quantile(rule.quantile, h) for key, h in histograms.items()}
            return {
                key: histogram_quantile(rule.quantile, bucket_increase(latest, baseline))
                for key, (latest, baseline, _) in self._windowed(rule, histograms, now).items()
            }
        if rule.function == "ratio":
            numerators = table.values(rule.metric, rule.match)
            denominators = table.values(rule.denominator, rule.match)
            pairs = {
                key: (numerators[key], denominators[key])
                for key in numerators.keys() & denominators.keys()
            }
            if rule.window_s > 0:
                pairs = {
                    key: (_increase(latest[0], base[0], True), _increase(latest[1], base[1], True))
                    for key, (latest, base, _) in self._windowed(rule, pairs, now).items()
                }
            return {key: num / den for key, (num, den) in pairs.items() if den > 0}
        # increase / rate
        is_counter = table.is_counter(rule.metric)
        windowed = self._windowed(rule, table.values(rule.metric, rule.match), now)
        result = {}
        for key, (latest, baseline, elapsed_s) in windowed.items():
            increase = _increase(latest, baseline, is_counter)
            result[key] = increase if rule.function == "increase" else increase / elapsed_s
        return result

    def _windowed(
        self, rule: AlertRule, readings: dict[SeriesKey, _R], now: float
    ) -> dict[SeriesKey, tuple[_R, _R, float]]:
        """Record this evaluation's readings; pair each with the reading ``window_s`` before.

        Returns ``(latest, baseline, seconds between them)`` per series.

        A series seen for the first time has nothing to compare with yet and is left out; one
        seen for less than ``window_s`` is compared with its first reading. Histories of series
        that were not read this time are dropped.
        """
        paired: dict[SeriesKey, tuple[_R, _R, float]] = {}
        for key, reading in readings.items():
            history = self._history.setdefault((rule.name, key), _History()).readings
            history.append((now, reading))
            # Keep one reading at or before the window's start, as the baseline.
            while len(history) > 1 and history[1][0] <= now - rule.window_s:
                history.popleft()
            if len(history) < 2:
                continue
            baseline_s, baseline = history[0]
            paired[key] = (reading, baseline, now - baseline_s)  # type: ignore[assignment]
        for stale in [
            key for key in self._history if key[0] == rule.name and key[1] not in readings
        ]:
            del self._history[stale]
        return paired

    def _timestamp(self) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(self._wall_clock() * 1e9))
        return stamp


def _increase(latest: float, baseline: float, is_counter: bool) -> float:
    # A counter only goes down when its process restarted: it counts from 0 again.
    if is_counter and latest < baseline:
        return latest
    return latest - baseline


def alert_id(rule: str, labels: Iterable[tuple[str, str]]) -> str:
    """A stable id for one rule and one label set."""
    text = "\0".join([rule, *(f"{name}={value}" for name, value in labels)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _message(tracked: _Tracked) -> Alert:
    rule = tracked.rule
    return Alert(
        id=alert_id(rule.name, tracked.labels),
        rule=rule.name,
        severity=rule.severity,
        state=tracked.state,
        summary=_summary(rule, dict(tracked.labels), tracked.value),
        labels=dict(tracked.labels),
        value=tracked.value,
        threshold=rule.threshold,
        since=tracked.since,
    )


def _summary(rule: AlertRule, labels: dict[str, str], value: float) -> str:
    template = rule.summary or (
        f"{rule.name}: {rule.metric}{_selector(labels)} is $value ({rule.op} $threshold)"
    )
    # Template rather than str.format: a label value or a typo cannot reach attributes.
    return string.Template(template).safe_substitute(
        labels, value=f"{value:.4g}", threshold=f"{rule.threshold:.4g}", rule=rule.name
    )


def _selector(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{value}"' for name, value in sorted(labels.items())) + "}"
