"""The alert engine on a fake clock: for-durations, resolution, deduplication, derived figures."""

from __future__ import annotations

import math

import pytest
from paca.monitor.v1 import monitor_types_pb2
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from monitor.alert_feed import AlertFeed
from monitor.alerts import AlertEngine
from monitor.errors import WatcherBehind
from monitor.figures import FigureTable, SeriesKey, histogram_quantile
from monitor.rules import AlertRule

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

FIRING = monitor_types_pb2.ALERT_STATE_FIRING
PENDING = monitor_types_pb2.ALERT_STATE_PENDING
RESOLVED = monitor_types_pb2.ALERT_STATE_RESOLVED
LABELS = ("service", "instance")


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauge(name: str, **series: float) -> Metric:
    """One gauge family, a series per instance name."""
    family = GaugeMetricFamily(name, "test", labels=LABELS)
    for instance, value in series.items():
        family.add_metric(["api_service", instance], value)
    return family


def counter(name: str, **series: float) -> Metric:
    family = CounterMetricFamily(name.removesuffix("_total"), "test", labels=LABELS)
    for instance, value in series.items():
        family.add_metric(["api_service", instance], value)
    return family


def histogram(name: str, buckets: list[tuple[str, float]]) -> Metric:
    family = HistogramMetricFamily(name, "test", labels=LABELS)
    family.add_metric(["api_service", "a"], buckets, sum_value=0.0)
    return family


def table(*families: Metric) -> FigureTable:
    return FigureTable(families)


def engine(rule: AlertRule, clock: FakeClock) -> AlertEngine:
    return AlertEngine([rule], clock=clock, wall_clock=lambda: 1_700_000_000.0)


def test_alert_is_pending_until_the_condition_held_for_its_duration_then_fires_once() -> None:
    clock = FakeClock()
    alerts = engine(AlertRule(name="Hot", metric="cpu", threshold=90, for_s=60), clock)

    assert alerts.evaluate(table(gauge("cpu", a=95))) == []
    assert [a.state for a in alerts.active()] == [PENDING]
    clock.now += 59
    assert alerts.evaluate(table(gauge("cpu", a=96))) == []
    clock.now += 1
    [fired] = alerts.evaluate(table(gauge("cpu", a=97)))
    clock.now += 10
    repeated = alerts.evaluate(table(gauge("cpu", a=98)))

    assert (fired.rule, fired.state, fired.value, fired.threshold) == ("Hot", FIRING, 97, 90)
    assert dict(fired.labels) == {"service": "api_service", "instance": "a"}
    assert fired.summary == 'Hot: cpu{instance="a",service="api_service"} is 97 (> 90)'
    assert fired.since.seconds == 1_700_000_000
    assert repeated == []  # deduplicated: still firing, nothing new to say
    assert [a.value for a in alerts.active()] == [98]


def test_pending_alert_that_stops_holding_is_forgotten_without_a_message() -> None:
    clock = FakeClock()
    alerts = engine(AlertRule(name="Hot", metric="cpu", threshold=90, for_s=60), clock)

    alerts.evaluate(table(gauge("cpu", a=95)))
    clock.now += 30
    changes = alerts.evaluate(table(gauge("cpu", a=50)))
    clock.now += 40
    changes += alerts.evaluate(table(gauge("cpu", a=95)))  # the duration starts over

    assert changes == []
    assert [a.state for a in alerts.active()] == [PENDING]


def test_firing_alert_resolves_with_the_same_id_when_the_condition_stops_holding() -> None:
    alerts = engine(AlertRule(name="Hot", metric="cpu", threshold=90), FakeClock())

    [fired] = alerts.evaluate(table(gauge("cpu", a=95)))
    [resolved] = alerts.evaluate(table(gauge("cpu", a=10)))

    assert (fired.state, resolved.state) == (FIRING, RESOLVED)
    assert resolved.id == fired.id
    assert resolved.value == 10
    assert alerts.active() == []


def test_each_label_set_is_its_own_alert_and_a_vanished_series_resolves() -> None:
    alerts = engine(AlertRule(name="Hot", metric="cpu", threshold=90), FakeClock())

    fired = alerts.evaluate(table(gauge("cpu", a=95, b=99, c=1)))
    [resolved] = alerts.evaluate(table(gauge("cpu", a=95)))

    assert sorted(a.labels["instance"] for a in fired) == ["a", "b"]
    assert len({a.id for a in fired}) == 2
    assert (resolved.labels["instance"], resolved.state) == ("b", RESOLVED)
    assert math.isnan(resolved.value)


def test_match_narrows_the_watched_series_by_label() -> None:
    rule = AlertRule(name="Hot", metric="cpu", threshold=90, match={"instance": "b"})
    alerts = engine(rule, FakeClock())

    [fired] = alerts.evaluate(table(gauge("cpu", a=95, b=99)))

    assert fired.labels["instance"] == "b"


def test_error_rate_is_the_ratio_of_two_counter_increases_over_the_window() -> None:
    clock = FakeClock()
    rule = AlertRule(
        name="Errors",
        metric="failures_total",
        function="ratio",
        denominator="calls_total",
        window_s=60,
        threshold=0.05,
    )
    alerts = engine(rule, clock)

    # 1 failure in 100 calls over the first 30 s; 21 in 200 over the whole 60 s window.
    assert (
        alerts.evaluate(table(counter("failures_total", a=10), counter("calls_total", a=100))) == []
    )
    clock.now += 30
    assert (
        alerts.evaluate(table(counter("failures_total", a=11), counter("calls_total", a=200))) == []
    )
    clock.now += 30
    [fired] = alerts.evaluate(table(counter("failures_total", a=31), counter("calls_total", a=300)))

    assert fired.value == pytest.approx(21 / 200)


def test_increase_over_a_window_sees_a_growing_gauge_and_a_counter_reset_counts_from_zero() -> None:
    clock = FakeClock()
    spool = AlertRule(name="Spool", metric="spool", function="increase", window_s=60, threshold=0)
    restarts = AlertRule(
        name="Calls", metric="calls_total", function="rate", window_s=60, threshold=100
    )
    alerts = AlertEngine([spool, restarts], clock=clock)

    alerts.evaluate(table(gauge("spool", a=5), counter("calls_total", a=5000)))
    clock.now += 30
    alerts.evaluate(table(gauge("spool", a=4), counter("calls_total", a=6000)))
    clock.now += 30
    changes = alerts.evaluate(table(gauge("spool", a=7), counter("calls_total", a=600)))
    clock.now += 30
    later = alerts.evaluate(table(gauge("spool", a=7), counter("calls_total", a=1200)))

    assert [(a.rule, a.value) for a in changes] == [("Spool", 2.0)]
    # The window now starts at the reading 60 s back (4): the spool still grew by 3.
    assert later == []
    # 600 after a restart is 600 new calls, not a drop of 5400: 600 / 60 s < 100 per second.
    assert not any(alert.rule == "Calls" for alert in alerts.active())


def test_p95_comes_from_the_histogram_observations_in_the_window() -> None:
    clock = FakeClock()
    rule = AlertRule(
        name="Slow", metric="latency", function="quantile", quantile=0.95, window_s=60, threshold=1
    )
    alerts = engine(rule, clock)

    # 100 fast observations, then 100 slow ones: lifetime p95 would be fast-ish, the window's slow.
    alerts.evaluate(table(histogram("latency", [("0.1", 100), ("2.0", 100), ("+Inf", 100)])))
    clock.now += 60
    [fired] = alerts.evaluate(
        table(histogram("latency", [("0.1", 100), ("2.0", 200), ("+Inf", 200)]))
    )

    assert fired.value == pytest.approx(0.1 + (2.0 - 0.1) * 0.95)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = ((1.0, 10.0), (2.0, 30.0), (math.inf, 40.0))

    assert histogram_quantile(0.5, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.25, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.99, buckets) == 2.0  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))))


def test_one_broken_rule_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = AlertRule(name="Hot", metric="cpu", threshold=90)
    broken = AlertRule(name="Broken", metric="cpu", threshold=90)
    alerts = AlertEngine([broken, good], clock=FakeClock())
    reduce = alerts._reduce

    def failing(rule: AlertRule, figures: FigureTable, now: float) -> dict[SeriesKey, float]:
        if rule is broken:
            raise ZeroDivisionError("a fault no real figure produces here")
        return reduce(rule, figures, now)

    monkeypatch.setattr(alerts, "_reduce", failing)
    [fired] = alerts.evaluate(table(gauge("cpu", a=95)))

    assert fired.rule == "Hot"
    assert "alert rule Broken could not be evaluated" in caplog.text


async def test_feed_ends_streams_on_close_and_cuts_off_a_watcher_that_falls_behind() -> None:
    feed = AlertFeed(max_queued=2)
    alert = monitor_types_pb2.Alert(rule="Hot", state=FIRING)
    slow = feed.subscribe()
    ending = feed.subscribe()

    feed.publish([alert, alert])
    assert await ending.next() == alert
    feed.publish([alert])  # slow now has 3 unread
    feed.close()

    with pytest.raises(WatcherBehind):
        await slow.next()
    assert await ending.next() == alert
    assert await ending.next() == alert
    assert await ending.next() is None
    assert await feed.subscribe().next() is None
