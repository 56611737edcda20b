"""Report intake: validation, liveness judged on a fake clock, nothing changed by bad input."""

from __future__ import annotations

import pytest
from paca.monitor.v1 import monitor_service_pb2, monitor_types_pb2

from monitor.registry import DOWN, STOPPED, UP, ServiceRegistry
from paca_runtime.errors import InvalidArgument

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

DOWN_AFTER_S = 30.0

Metric = monitor_types_pb2.Metric
Histogram = monitor_types_pb2.Histogram


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> ServiceRegistry:
    return ServiceRegistry(DOWN_AFTER_S, clock=clock, wall_clock=lambda: 1_700_000_000.5)


def report(
    service: str = "api_service",
    instance: str = "host:1",
    *,
    metrics: list[Metric] | None = None,
    final: bool = False,
    pid: int = 4242,
) -> monitor_service_pb2.ReportRequest:
    return monitor_service_pb2.ReportRequest(
        service=service,
        instance=instance,
        pid=pid,
        address="127.0.0.1:50051",
        metrics=metrics if metrics is not None else [Metric(name="calls_total", counter=3)],
        final=final,
    )


def test_reported_instance_is_up_with_its_figures(registry: ServiceRegistry) -> None:
    registry.record(report())

    [status] = registry.statuses()

    assert status.state == UP
    assert status.record.service == "api_service"
    assert status.record.instance == "host:1"
    assert status.record.pid == 4242
    assert status.record.address == "127.0.0.1:50051"
    assert list(status.record.metrics) == [Metric(name="calls_total", counter=3)]
    assert status.record.received_time.ToNanoseconds() == 1_700_000_000_500_000_000


def test_instance_turns_down_once_silent_longer_than_grace(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report())

    clock.advance(DOWN_AFTER_S)
    assert registry.statuses()[0].state == UP
    clock.advance(0.001)
    [status] = registry.statuses()

    assert status.state == DOWN
    assert status.age_s == pytest.approx(DOWN_AFTER_S + 0.001)


def test_down_instance_is_up_again_after_next_report(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report())
    clock.advance(DOWN_AFTER_S + 1)
    assert registry.statuses()[0].state == DOWN

    registry.record(report())

    assert registry.statuses()[0].state == UP
    assert registry.statuses()[0].age_s == 0.0


def test_final_report_marks_instance_stopped_not_down(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report())
    registry.record(report(final=True))

    assert registry.statuses()[0].state == STOPPED
    clock.advance(DOWN_AFTER_S * 10)
    assert registry.statuses()[0].state == STOPPED


def test_statuses_are_sorted_by_service_then_instance(registry: ServiceRegistry) -> None:
    for service, instance in [("db_service", "b"), ("api_service", "z"), ("db_service", "a")]:
        registry.record(report(service, instance))

    keys = [(s.record.service, s.record.instance) for s in registry.statuses()]

    assert keys == [("api_service", "z"), ("db_service", "a"), ("db_service", "b")]


def test_live_pids_are_those_of_up_instances_only(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report("a", "1", pid=11))
    registry.record(report("b", "1", pid=12, final=True))
    registry.record(report("c", "1", pid=0))
    clock.advance(DOWN_AFTER_S + 1)
    registry.record(report("d", "1", pid=14))

    assert registry.live_pids() == {14}


def test_stored_figures_do_not_follow_later_changes_to_the_request(
    registry: ServiceRegistry,
) -> None:
    request = report()
    registry.record(request)

    request.metrics[0].counter = 99

    assert registry.statuses()[0].record.metrics[0].counter == 3


def _histogram(bounds: list[float], counts: list[int]) -> Metric:
    return Metric(name="latency_seconds", histogram=Histogram(bounds=bounds, counts=counts))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(report(service=""), "service", id="service-missing"),
        pytest.param(report(service="  "), "service", id="service-blank"),
        pytest.param(report(instance=""), "instance", id="instance-missing"),
        pytest.param(report(pid=-1), "pid", id="pid-negative"),
        pytest.param(
            report(metrics=[Metric(name="ok", gauge=1), Metric(name="1bad", gauge=1)]),
            "metrics[1].name",
            id="name-starts-with-digit",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls-total", counter=1)]),
            "metrics[0].name",
            id="name-with-dash",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=1, labels={"bad-label": "x"})]),
            "metrics[0].labels",
            id="label-name-with-dash",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=1, labels={"__reserved": "x"})]),
            "metrics[0].labels",
            id="label-name-reserved-prefix",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=1, labels={"service": "x"})]),
            "metrics[0].labels",
            id="label-added-by-monitor",
        ),
        pytest.param(report(metrics=[Metric(name="calls")]), "metrics[0].value", id="no-value"),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=-1)]),
            "metrics[0].counter",
            id="counter-negative",
        ),
        pytest.param(
            report(metrics=[_histogram([0.1, 1.0], [1, 2])]),
            "metrics[0].histogram.counts",
            id="histogram-missing-inf-bucket",
        ),
        pytest.param(
            report(metrics=[_histogram([1.0, 0.1], [1, 2, 3])]),
            "metrics[0].histogram.bounds",
            id="histogram-bounds-descending",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=1), Metric(name="calls", gauge=1)]),
            "metrics[1].name",
            id="same-name-two-kinds",
        ),
        pytest.param(
            report(metrics=[Metric(name="calls", counter=1), Metric(name="calls", counter=2)]),
            "metrics[1]",
            id="same-series-twice",
        ),
    ],
)
def test_invalid_report_is_rejected_naming_the_field(
    registry: ServiceRegistry, request_: monitor_service_pb2.ReportRequest, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        registry.record(request_)

    assert caught.value.field == field
    assert registry.statuses() == []


def test_invalid_report_leaves_previous_report_in_place(
    registry: ServiceRegistry, clock: FakeClock
) -> None:
    registry.record(report())
    before = registry.statuses()
    clock.advance(5)

    with pytest.raises(InvalidArgument):
        registry.record(report(metrics=[Metric(name="calls", counter=1, labels={"a-b": "x"})]))

    [after] = registry.statuses()
    assert after.record is before[0].record
    assert after.age_s == 5


def test_valid_histogram_and_labelled_series_are_accepted(registry: ServiceRegistry) -> None:
    metrics = [
        _histogram([0.1, 1.0], [1, 2, 3]),
        Metric(name="calls_total", counter=1, labels={"endpoint": "a"}),
        Metric(name="calls_total", counter=2, labels={"endpoint": "b"}),
        Metric(name="job:rate5m", gauge=0.5),
    ]

    registry.record(report(metrics=metrics))

    assert len(registry.statuses()[0].record.metrics) == 4
