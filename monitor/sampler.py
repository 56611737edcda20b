"""The sampling loop: host and process figures every interval, the latest kept for readers.

psutil calls run in a worker thread, so a slow ``/proc`` never stalls report intake. Between
samples the loop waits on the stop event with a timeout, so stopping cuts the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paca.monitor.v1 import monitor_types_pb2

from monitor.collector import HostCollector
from monitor.registry import ServiceRegistry

logger = logging.getLogger(__name__)

ProcessFigures = monitor_types_pb2.ProcessFigures


class Sampler:
    """Samples the host and the processes of live instances; readers see the latest sample.

    Args:
        collector: Does the psutil work.
        registry: Says which processes to sample (those of instances that are UP).
        interval_s: Seconds between samples.
    """

    def __init__(
        self, collector: HostCollector, registry: ServiceRegistry, interval_s: float
    ) -> None:
        self.interval_s = interval_s
        self.samples_taken = 0
        self.samples_failed = 0
        self._collector = collector
        self._registry = registry
        self._host = monitor_types_pb2.HostFigures()
        self._processes: dict[int, ProcessFigures] = {}

    def __repr__(self) -> str:
        return (
            f"<Sampler interval_s={self.interval_s:g} taken={self.samples_taken} "
            f"failed={self.samples_failed} processes={len(self._processes)}>"
        )

    @property
    def host(self) -> monitor_types_pb2.HostFigures:
        """The latest host figures; empty before the first sample. Treat as read-only."""
        return self._host

    def latest_process(self, pid: int) -> ProcessFigures | None:
        """The process's figures from the latest sample, if it was sampled."""
        return self._processes.get(pid)

    async def process(self, pid: int) -> ProcessFigures | None:
        """The process's latest figures, sampled now if no sample has them yet.

        Returns None when the process does not exist.
        """
        figures = self._processes.get(pid)
        if figures is None:
            figures = await asyncio.to_thread(self._collector.process_figures, pid)
            if figures is not None:
                self._processes[pid] = figures
        return figures

    async def refresh(self) -> None:
        """Take one sample now and make it the latest."""
        pids = self._registry.live_pids()
        host, processes = await asyncio.to_thread(self._sample, pids)
        self._host = host
        self._processes = processes
        self.samples_taken += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every interval until ``stop`` is set; a failed sample is logged and skipped."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:
                self.samples_failed += 1
                logger.exception("sampling the host failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def _sample(
        self, pids: set[int]
    ) -> tuple[monitor_types_pb2.HostFigures, dict[int, ProcessFigures]]:
        self._collector.retain(pids)
        host = self._collector.sample()
        processes = {}
        for pid in sorted(pids):
            figures = self._collector.process_figures(pid)
            if figures is not None:
                processes[pid] = figures
        return host, processes
