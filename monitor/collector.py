"""Host and process figures sampled with psutil.

Figures that psutil reports as running totals (disk and network bytes, CPU time) become rates
over the interval measured between two samples, with an injectable monotonic clock, so a late
sample does not inflate a rate. Every call here reads ``/proc`` (or the platform's equivalent)
and may block, so the sampler makes them off the event loop.

All calls to one :class:`HostCollector`, its construction included, must come from one thread:
``psutil.cpu_percent`` keeps its baseline per calling thread, so samples taken on whichever
thread of a shared pool happens to be free would each measure a different interval. The sampler
gives the collector a thread of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import psutil
from google.protobuf import timestamp_pb2
from paca.monitor.v1 import monitor_types_pb2

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _IoTotals:
    """Byte counters since boot, and when they were read (monotonic seconds)."""

    at_s: float
    disk_read: int
    disk_write: int
    net_sent: int
    net_received: int


def _rate(current: int, previous: int, elapsed_s: float) -> float:
    # A counter that went backwards was reset (device removed, counter wrapped): no rate.
    if elapsed_s <= 0 or current < previous:
        return 0.0
    return (current - previous) / elapsed_s


class HostCollector:
    """Samples the host, and the processes of reporting services, on demand.

    Not thread-safe, and bound to the thread that made it (see the module docs). Each method
    may block for a few milliseconds, or longer on a host with very many connections or open
    files.

    Args:
        clock: Monotonic seconds, the base of every rate.
        wall_clock: Seconds since the epoch, only for ``sample_time``.
        disk_path: The mount whose usage is reported.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        disk_path: str = "/",
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._disk_path = disk_path
        self._processes: dict[int, psutil.Process] = {}
        self._connections_denied = False
        # Baselines, so that the first sample already measures an interval.
        psutil.cpu_percent(percpu=True)
        self._last_io = self._read_io()

    def __repr__(self) -> str:
        return f"<HostCollector disk={self._disk_path} processes={len(self._processes)}>"

    def sample(self) -> monitor_types_pb2.HostFigures:
        """Host figures; CPU and I/O rates cover the time since the previous sample."""
        cpu = psutil.cpu_percent(percpu=True)
        io = self._read_io()
        previous, self._last_io = self._last_io, io
        elapsed_s = io.at_s - previous.at_s
        load_1m, load_5m, load_15m = psutil.getloadavg()
        memory = psutil.virtual_memory()
        figures = monitor_types_pb2.HostFigures(
            cpu_percent_per_core=cpu,
            load_1m=load_1m,
            load_5m=load_5m,
            load_15m=load_15m,
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            swap_used_bytes=psutil.swap_memory().used,
            disk_used_percent=psutil.disk_usage(self._disk_path).percent,
            disk_read_bytes_per_second=_rate(io.disk_read, previous.disk_read, elapsed_s),
            disk_write_bytes_per_second=_rate(io.disk_write, previous.disk_write, elapsed_s),
            net_sent_bytes_per_second=_rate(io.net_sent, previous.net_sent, elapsed_s),
            net_received_bytes_per_second=_rate(io.net_received, previous.net_received, elapsed_s),
            connections=self._count_connections(),
        )
        figures.sample_time.CopyFrom(self._timestamp())
        return figures

    def process_figures(self, pid: int) -> monitor_types_pb2.ProcessFigures | None:
        """Figures of one process, or None when it no longer exists.

        ``cpu_percent`` covers the time since the previous call for the same pid (the
        ``psutil.Process`` is kept for that); the first call for a pid reports 0. Figures the
        monitor is not allowed to read (another user's process) are reported as 0.
        """
        try:
            process = self._process(pid)
            with process.oneshot():
                cpu_percent = process.cpu_percent(interval=None)
                rss_bytes = process.memory_info().rss
                threads = process.num_threads()
            open_files = _count_or_zero(process.open_files)
            connections = _count_or_zero(lambda: process.net_connections(kind="inet"))
        except psutil.NoSuchProcess:
            self._processes.pop(pid, None)
            return None
        except psutil.AccessDenied:
            logger.debug("not allowed to read process %d", pid)
            return monitor_types_pb2.ProcessFigures(pid=pid)
        return monitor_types_pb2.ProcessFigures(
            pid=pid,
            cpu_percent=cpu_percent,
            rss_bytes=rss_bytes,
            threads=threads,
            open_files=open_files,
            connections=connections,
        )

    def retain(self, pids: Iterable[int]) -> None:
        """Forget the processes not in ``pids``, so the cache follows the reporting services."""
        keep = set(pids)
        for pid in [pid for pid in self._processes if pid not in keep]:
            del self._processes[pid]

    def _process(self, pid: int) -> psutil.Process:
        process = self._processes.get(pid)
        # is_running() also compares the creation time, so a recycled pid gets a fresh object
        # instead of a CPU baseline that belongs to a dead process.
        if process is None or not process.is_running():
            process = psutil.Process(pid)
            self._processes[pid] = process
        return process

    def _read_io(self) -> _IoTotals:
        # Either may be None on hosts without disks or network devices (some containers).
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        return _IoTotals(
            at_s=self._clock(),
            disk_read=disk.read_bytes if disk else 0,
            disk_write=disk.write_bytes if disk else 0,
            net_sent=net.bytes_sent if net else 0,
            net_received=net.bytes_recv if net else 0,
        )

    def _count_connections(self) -> int:
        try:
            return len(psutil.net_connections(kind="inet"))
        except psutil.AccessDenied:
            # Some platforms (macOS) list host-wide connections to root only.
            if not self._connections_denied:
                self._connections_denied = True
                logger.info("host connections are not readable without privileges; reporting 0")
            return 0

    def _timestamp(self) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(self._wall_clock() * 1e9))
        return stamp


def _count_or_zero(read: Callable[[], Sized]) -> int:
    try:
        return len(read())
    except psutil.AccessDenied:
        return 0
