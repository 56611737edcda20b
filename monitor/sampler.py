"""The sampling loop: host and process figures every interval, the latest kept for readers.

psutil calls run on one thread of the sampler's own, never on the event loop (a slow ``/proc``
must not stall report intake) and never on a shared pool (``psutil.cpu_percent`` measures from
the previous call *on the same thread*). Between samples the loop waits on a stop event with a
timeout, so stopping cuts the wait short.

Lifecycle: ``start()`` once, which takes the first sample before it returns, then ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from paca.monitor.v1 import monitor_types_pb2

from monitor.collector import HostCollector
from monitor.registry import ServiceRegistry

logger = logging.getLogger(__name__)

ProcessFigures = monitor_types_pb2.ProcessFigures
_T = TypeVar("_T")


class Sampler:
    """Samples the host and the processes of live instances; readers see the latest sample.

    Args:
        registry: Says which processes to sample (those of instances that are UP).
        interval_s: Seconds between samples.
        collector_factory: Makes the collector; called once, on the sampling thread.
        on_sample: Called on the event loop after each sample (alert evaluation); what it
            raises is logged and does not stop sampling.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        interval_s: float,
        collector_factory: Callable[[], HostCollector] = HostCollector,
        on_sample: Callable[[], object] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.samples_taken = 0
        self.samples_failed = 0
        self._registry = registry
        self._collector_factory = collector_factory
        self._on_sample = on_sample
        self._collector: HostCollector | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._host = monitor_types_pb2.HostFigures()
        self._processes: dict[int, ProcessFigures] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "running" if self._task is not None else "stopped"
        return (
            f"<Sampler {state} interval_s={self.interval_s:g} taken={self.samples_taken} "
            f"failed={self.samples_failed} processes={len(self._processes)}>"
        )

    @property
    def host(self) -> monitor_types_pb2.HostFigures:
        """The latest host figures; empty before the first sample. Treat as read-only."""
        return self._host

    def latest_process(self, pid: int) -> ProcessFigures | None:
        """The process's figures from the latest sample, if it was sampled."""
        return self._processes.get(pid)

    async def start(self) -> None:
        """Make the collector, take the first sample and start the loop. May be called once.

        The first sample covers only the moments since the collector was made; the loop's
        samples cover a whole interval each.
        """
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-sampler")
        self._collector = await self._call(self._collector_factory)
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="monitor-sampler")

    async def aclose(self) -> None:
        """Stop the loop (a sample in progress completes) and release the thread. Idempotent."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def process(self, pid: int) -> ProcessFigures | None:
        """The process's latest figures, sampled now if no sample has them yet.

        Returns None when the process does not exist or the sampler is not running.
        """
        figures = self._processes.get(pid)
        if figures is None and self._collector is not None and self._executor is not None:
            figures = await self._call(self._collector.process_figures, pid)
            if figures is not None:
                self._processes[pid] = figures
        return figures

    async def refresh(self) -> None:
        """Take one sample now, make it the latest, then run ``on_sample``."""
        pids = self._registry.live_pids()
        host, processes = await self._call(self._sample, pids)
        self._host = host
        self._processes = processes
        self.samples_taken += 1
        if self._on_sample is not None:
            try:
                self._on_sample()
            except Exception:
                logger.exception("handling a new sample failed")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            if self._stop.is_set():
                return
            try:
                await self.refresh()
            except Exception:
                self.samples_failed += 1
                logger.exception("sampling the host failed")

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise RuntimeError("the sampler is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _sample(
        self, pids: set[int]
    ) -> tuple[monitor_types_pb2.HostFigures, dict[int, ProcessFigures]]:
        assert self._collector is not None
        self._collector.retain(pids)
        host = self._collector.sample()
        processes = {}
        for pid in sorted(pids):
            figures = self._collector.process_figures(pid)
            if figures is not None:
                processes[pid] = figures
        return host, processes
