"""Process entry point shared by the services: logging, tracing, event loop, signals.

The first SIGTERM or SIGINT starts a graceful stop (the service drains within its grace period);
a second one exits at once. When serving, the process prints one line
``PACA_READY {"service": ..., "grpc": "host:port", ...}`` on stdout, so a supervisor or a test
learns the real addresses (port 0 binds a free port) by waiting for an event, not by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from paca_runtime.logs import configure_logging
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource
from paca_runtime.telemetry import setup_tracing, shutdown_tracing

logger = logging.getLogger(__name__)

READY_PREFIX = "PACA_READY "


class Service(Protocol):
    """What a process runs: started once, stopped once."""

    name: str

    async def start(self) -> dict[str, str]:
        """Start serving; return the bound addresses by role, e.g. {"grpc": "127.0.0.1:50051"}."""
        ...

    async def stop(self) -> None:
        """Stop gracefully within the configured grace period."""
        ...


def run(name: str, build: Callable[[SettingsSource, RuntimeSettings], Service]) -> int:
    """Run a service until a signal; returns the process exit status.

    Args:
        name: Service name, used for logs and traces before the service exists.
        build: Makes the service from the settings; raises SettingsError on bad ones.
    """
    try:
        source = SettingsSource()
        runtime = RuntimeSettings.from_source(source)
    except SettingsError as exc:
        print(f"{name}: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(name, runtime.log_level, runtime.log_format)
    try:
        setup_tracing(name)
    except SettingsError as exc:
        print(f"{name}: invalid settings: {exc}", file=sys.stderr)
        return 2
    # Everything loaded so far (modules, settings: some 80,000 objects) lives as long as the
    # process. Frozen, it is no longer walked by every full collection, which under load comes
    # every few seconds and is a measurable share of a small call's CPU (bench/*.py).
    gc.collect()
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(_serve(name, build, source, runtime))
    finally:
        shutdown_tracing()


async def _serve(
    name: str,
    build: Callable[[SettingsSource, RuntimeSettings], Service],
    source: SettingsSource,
    runtime: RuntimeSettings,
) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        logger.info("%s: stopping gracefully", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        service = build(source, runtime)
    except SettingsError as exc:
        logger.error("invalid settings: %s", exc)
        return 2
    try:
        addresses = await service.start()
    except Exception:
        logger.exception("%s failed to start", name)
        with contextlib.suppress(Exception):
            await service.stop()
        return 1
    ready = {"service": name, "pid": str(os.getpid()), **addresses}
    print(READY_PREFIX + json.dumps(ready), flush=True)
    await stopping.wait()
    await service.stop()
    logger.info("%s stopped", name)
    return 0
