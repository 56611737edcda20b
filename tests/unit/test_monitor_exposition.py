"""What /metrics and the status page show, rendered without a server."""

from __future__ import annotations

import pytest
from paca.monitor.v1 import monitor_service_pb2, monitor_types_pb2
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from monitor.exposition import MonitorMetrics
from monitor.registry import ServiceRegistry
from monitor.sampler import Sampler
from monitor.status_page import render_status_page, status_snapshot

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

Metric = monitor_types_pb2.Metric
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> ServiceRegistry:
    return ServiceRegistry(30.0, clock=clock)


def scrape(registry: ServiceRegistry) -> tuple[dict[str, str], Series]:
    """Kinds by family name, and every sample by name and labels."""
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(MonitorMetrics(registry, Sampler(registry, 10.0)))
    kinds: dict[str, str] = {}
    series: Series = {}
    for family in text_string_to_metric_families(generate_latest(metrics).decode()):
        kinds[family.name] = family.type
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return kinds, series


def report(
    instance: str, *metrics: Metric, final: bool = False
) -> monitor_service_pb2.ReportRequest:
    return monitor_service_pb2.ReportRequest(
        service="api_service", instance=instance, metrics=metrics, final=final
    )


def labels(instance: str, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"service": "api_service", "instance": instance, **extra}.items())


def test_reported_figures_keep_their_kind_and_gain_instance_labels(
    registry: ServiceRegistry,
) -> None:
    registry.record(
        report(
            "h:1",
            Metric(name="calls_total", counter=7, labels={"endpoint": "geo"}),
            Metric(name="pool_in_use", gauge=3),
        )
    )

    kinds, series = scrape(registry)

    assert kinds["calls"] == "counter"
    assert kinds["pool_in_use"] == "gauge"
    assert series[("calls_total", labels("h:1", endpoint="geo"))] == 7
    assert series[("pool_in_use", labels("h:1"))] == 3
    assert series[("paca_service_up", labels("h:1"))] == 1


def test_histogram_buckets_become_cumulative_with_inf_count(registry: ServiceRegistry) -> None:
    histogram = monitor_types_pb2.Histogram(bounds=[0.1, 1.0], counts=[2, 3, 1], sum=2.5, count=6)
    registry.record(report("h:1", Metric(name="latency_seconds", histogram=histogram)))

    kinds, series = scrape(registry)

    assert kinds["latency_seconds"] == "histogram"
    assert series[("latency_seconds_bucket", labels("h:1", le="0.1"))] == 2
    assert series[("latency_seconds_bucket", labels("h:1", le="1.0"))] == 5
    assert series[("latency_seconds_bucket", labels("h:1", le="+Inf"))] == 6
    assert series[("latency_seconds_count", labels("h:1"))] == 6
    assert series[("latency_seconds_sum", labels("h:1"))] == 2.5


def test_series_of_several_instances_share_one_family(registry: ServiceRegistry) -> None:
    registry.record(report("h:1", Metric(name="calls_total", counter=1)))
    registry.record(report("h:2", Metric(name="calls_total", counter=2, labels={"x": "y"})))

    _, series = scrape(registry)

    assert series[("calls_total", labels("h:1"))] == 1
    assert series[("calls_total", labels("h:2", x="y"))] == 2


def test_stopped_and_down_instances_show_up_zero_and_no_figures(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report("gone", Metric(name="calls_total", counter=1)))
    clock.now += 31
    registry.record(report("done", Metric(name="calls_total", counter=2), final=True))

    kinds, series = scrape(registry)

    assert series[("paca_service_up", labels("gone"))] == 0
    assert series[("paca_service_up", labels("done"))] == 0
    assert series[("paca_service_last_report_age_seconds", labels("gone"))] == 31
    assert "calls" not in kinds


def test_reported_figure_cannot_pose_as_the_monitors_own(registry: ServiceRegistry) -> None:
    registry.record(report("h:1", Metric(name="paca_service_up", gauge=42)))

    _, series = scrape(registry)

    assert series[("paca_service_up", labels("h:1"))] == 1


def test_host_figures_are_absent_before_the_first_sample(registry: ServiceRegistry) -> None:
    kinds, _ = scrape(registry)

    assert not any(name.startswith("paca_host_") for name in kinds)


def test_status_snapshot_carries_reported_names_as_data_for_the_page_to_insert_as_text(
    registry: ServiceRegistry,
) -> None:
    registry.record(
        monitor_service_pb2.ReportRequest(service="<script>", instance="h:1", address="a&b")
    )

    snapshot = status_snapshot(
        registry.statuses(), monitor_types_pb2.HostFigures(), lambda pid: None, []
    )

    assert snapshot == {
        "host": None,
        "services": [
            {
                "service": "<script>",
                "instance": "h:1",
                "state": "UP",
                "address": "a&b",
                "pid": 0,
                "age_s": 0.0,
                "cpu_percent": None,
                "rss_bytes": None,
            }
        ],
        "alerts": [],
    }


def test_status_page_polls_each_interval_and_inserts_values_as_text_only() -> None:
    page = render_status_page(2.5)

    assert "const REFRESH_MS = 2500;" in page
    assert 'fetch("/api/status"' in page
    assert "innerHTML" not in page
