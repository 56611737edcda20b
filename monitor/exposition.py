"""The monitor's HTTP side: ``GET /metrics`` in Prometheus text format, the status page at
``GET /`` and the JSON it polls, ``GET /api/status``.

``/metrics`` is rendered on each scrape by :class:`MonitorMetrics`, a prometheus-client custom
collector reading the registry and the latest sample, so there are no global mutable metrics
to keep in step. What it exposes:

- ``paca_host_*``: the latest host sample (``paca_host_cpu_percent{core=...}``, its mean
  ``paca_host_cpu_usage_percent``, load, memory and ``paca_host_memory_used_percent``...);
- ``paca_service_up{service,instance}``, ``paca_service_last_report_age_seconds`` and
  ``paca_service_state{service,instance,state}`` (1 for the instance's state among up, down
  and stopped, 0 for the others, so a rule can tell a crash from a clean stop);
- ``paca_process_*{service,instance}``: figures of the processes of instances that are UP;
- every metric reported by an UP instance, under its own name and kind, with ``service`` and
  ``instance`` labels added. Instances that are DOWN or STOPPED are left out, as a scrape of a
  stopped process would find nothing; their ``paca_service_up`` is 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from paca.monitor.v1 import monitor_types_pb2
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from monitor.registry import DOWN, STOPPED, UP, InstanceStatus, ServiceRegistry
from monitor.sampler import Sampler
from monitor.status_page import render_status_page, status_snapshot

logger = logging.getLogger(__name__)

INSTANCE_LABELS = ("service", "instance")
STATE_NAMES = {UP: "up", DOWN: "down", STOPPED: "stopped"}

_Reported = tuple[InstanceStatus, monitor_types_pb2.Metric]


class MonitorMetrics:
    """A prometheus-client collector over the registry and the sampler; stateless itself."""

    def __init__(self, registry: ServiceRegistry, sampler: Sampler) -> None:
        self._registry = registry
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        statuses = self._registry.statuses()
        own = [*_host_families(self._sampler.host), *self._instance_families(statuses)]
        yield from own
        yield from _reported_families(statuses, taken={family.name for family in own})

    def _instance_families(self, statuses: Sequence[InstanceStatus]) -> list[Metric]:
        up = GaugeMetricFamily(
            "paca_service_up", "1 while the instance reports, else 0", labels=INSTANCE_LABELS
        )
        age = GaugeMetricFamily(
            "paca_service_last_report_age_seconds",
            "Seconds since the instance's last report",
            labels=INSTANCE_LABELS,
        )
        state = GaugeMetricFamily(
            "paca_service_state",
            "1 for the instance's state (up, down, stopped), 0 for the others",
            labels=[*INSTANCE_LABELS, "state"],
        )
        process = {
            field: GaugeMetricFamily(f"paca_process_{field}", doc, labels=INSTANCE_LABELS)
            for field, doc in (
                ("cpu_percent", "CPU use of the process over the last sample, % of one core"),
                ("rss_bytes", "Resident memory of the process"),
                ("threads", "Threads of the process"),
                ("open_files", "Open files of the process"),
                ("connections", "Internet sockets of the process"),
            )
        }
        for status in statuses:
            labels = (status.record.service, status.record.instance)
            up.add_metric(labels, 1.0 if status.state == UP else 0.0)
            age.add_metric(labels, status.age_s)
            for value, name in STATE_NAMES.items():
                state.add_metric([*labels, name], 1.0 if status.state == value else 0.0)
            figures = self._sampler.latest_process(status.record.pid)
            if status.state == UP and figures is not None:
                for field, family in process.items():
                    family.add_metric(labels, float(getattr(figures, field)))
        return [up, age, state, *process.values()]


def _host_families(host: monitor_types_pb2.HostFigures) -> list[Metric]:
    if not host.HasField("sample_time"):
        return []  # not sampled yet: no figures rather than zeros that look real
    cpu = GaugeMetricFamily(
        "paca_host_cpu_percent", "CPU use per core over the last sample, 0..100", labels=["core"]
    )
    cores = host.cpu_percent_per_core
    for core, percent in enumerate(cores):
        cpu.add_metric([str(core)], percent)
    used = host.memory_total_bytes - host.memory_available_bytes
    gauges = (
        (
            "paca_host_cpu_usage_percent",
            "CPU use over the last sample, mean of the cores, 0..100",
            sum(cores) / len(cores) if cores else 0.0,
        ),
        (
            "paca_host_memory_used_percent",
            "Share of physical memory not available without swapping, 0..100",
            100.0 * used / host.memory_total_bytes if host.memory_total_bytes else 0.0,
        ),
        ("paca_host_load1", "Load average over 1 minute", host.load_1m),
        ("paca_host_load5", "Load average over 5 minutes", host.load_5m),
        ("paca_host_load15", "Load average over 15 minutes", host.load_15m),
        ("paca_host_memory_total_bytes", "Physical memory", host.memory_total_bytes),
        (
            "paca_host_memory_available_bytes",
            "Memory available without swapping",
            host.memory_available_bytes,
        ),
        ("paca_host_swap_used_bytes", "Swap in use", host.swap_used_bytes),
        (
            "paca_host_disk_used_percent",
            "Used share of the root filesystem",
            host.disk_used_percent,
        ),
        (
            "paca_host_disk_read_bytes_per_second",
            "Disk reads over the last sample",
            host.disk_read_bytes_per_second,
        ),
        (
            "paca_host_disk_write_bytes_per_second",
            "Disk writes over the last sample",
            host.disk_write_bytes_per_second,
        ),
        (
            "paca_host_network_sent_bytes_per_second",
            "Bytes sent over the last sample",
            host.net_sent_bytes_per_second,
        ),
        (
            "paca_host_network_received_bytes_per_second",
            "Bytes received over the last sample",
            host.net_received_bytes_per_second,
        ),
        ("paca_host_connections", "Internet sockets on the host", host.connections),
    )
    return [cpu, *(GaugeMetricFamily(name, doc, value=float(v)) for name, doc, v in gauges)]


def _family_name(metric: monitor_types_pb2.Metric) -> str:
    # prometheus-client names a counter family without "_total" and adds it to the sample.
    if metric.WhichOneof("value") == "counter":
        return metric.name.removesuffix("_total")
    return metric.name


def _reported_families(statuses: Sequence[InstanceStatus], taken: set[str]) -> Iterator[Metric]:
    groups: dict[str, list[_Reported]] = {}
    for status in statuses:
        if status.state != UP:
            continue
        for metric in status.record.metrics:
            groups.setdefault(_family_name(metric), []).append((status, metric))
    for name in sorted(groups):
        if name in taken:
            logger.debug("reported metric %s clashes with the monitor's own; left out", name)
            continue
        yield _family(name, groups[name])


def _family(name: str, series: list[_Reported]) -> Metric:
    """One family from the series of every instance; a series of another kind is left out.

    Series of one family may carry different label names. prometheus-client's families take
    one list of label names, so each series gets the union and then loses the labels it has no
    value for: Prometheus reads an empty label as an absent one anyway, so this only keeps the
    text clean.
    """
    kind = series[0][1].WhichOneof("value")
    same_kind = [
        (status, metric) for status, metric in series if metric.WhichOneof("value") == kind
    ]
    if len(same_kind) < len(series):
        logger.debug("reported metric %s has series of several kinds; kept the %s ones", name, kind)
    extra = sorted({label for _, metric in same_kind for label in metric.labels})
    label_names = [*INSTANCE_LABELS, *extra]
    doc = f"{kind} reported by services"
    family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if kind == "counter":
        family = CounterMetricFamily(name, doc, labels=label_names)
    elif kind == "histogram":
        family = HistogramMetricFamily(name, doc, labels=label_names)
    else:
        family = GaugeMetricFamily(name, doc, labels=label_names)
    for status, metric in same_kind:
        values = [
            status.record.service,
            status.record.instance,
            *(metric.labels.get(label, "") for label in extra),
        ]
        if isinstance(family, HistogramMetricFamily):
            family.add_metric(values, _buckets(metric.histogram), metric.histogram.sum)
        elif isinstance(family, CounterMetricFamily):
            family.add_metric(values, metric.counter)
        else:
            family.add_metric(values, metric.gauge)
    family.samples = [
        sample._replace(labels={key: value for key, value in sample.labels.items() if value})
        for sample in family.samples
    ]
    return family


def _buckets(histogram: monitor_types_pb2.Histogram) -> list[tuple[str, float]]:
    """Prometheus' cumulative buckets from the contract's per-bucket counts."""
    buckets = []
    total = 0
    for bound, count in zip([*histogram.bounds, math.inf], histogram.counts, strict=True):
        total += count
        buckets.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
    return buckets


class ExpositionServer:
    """The HTTP server of ``/metrics`` and the status page.

    Args:
        address: ``host:port`` to bind; port 0 picks a free port (see ``bound_address``).
        registry: The instances to show.
        sampler: The host and process figures to show.
        refresh_s: How often the status page reloads itself.
        collectors: More figures for ``/metrics`` (alerting's own).
        alerts: The alerts pending or firing now, for the status page.
    """

    def __init__(
        self,
        address: str,
        registry: ServiceRegistry,
        sampler: Sampler,
        refresh_s: float,
        *,
        collectors: Sequence[Collector] = (),
        alerts: Callable[[], Sequence[monitor_types_pb2.Alert]] = tuple,
    ) -> None:
        self.address = address
        self.port = 0
        self._registry = registry
        self._sampler = sampler
        self._refresh_s = refresh_s
        self._metrics = CollectorRegistry(auto_describe=False)
        self._metrics.register(MonitorMetrics(registry, sampler))
        for collector in collectors:
            self._metrics.register(collector)
        self._alerts = alerts
        self._page = render_status_page(refresh_s)
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        state = "serving" if self._runner is not None else "stopped"
        return f"<ExpositionServer address={self.address} port={self.port} {state}>"

    @property
    def bound_address(self) -> str:
        """The address to scrape, with the real port after binding port 0."""
        return f"{self.address.rpartition(':')[0]}:{self.port}"

    async def start(self) -> None:
        """Bind and serve. May be called once."""
        host, _, port = self.address.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/", self._serve_status_page)
        app.router.add_get("/api/status", self._serve_status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        # The runner's sockets know the port the OS picked for port 0.
        self.port = int(runner.addresses[0][1])
        logger.info("monitor serving HTTP on %s", self.bound_address)

    async def aclose(self) -> None:
        """Stop serving; in-flight requests finish first. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _serve_status_page(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html")

    async def _serve_status(self, request: web.Request) -> web.Response:
        snapshot = status_snapshot(
            self._registry.statuses(),
            self._sampler.host,
            self._sampler.latest_process,
            self._alerts(),
        )
        return web.json_response(snapshot, headers={"Cache-Control": "no-store"})
