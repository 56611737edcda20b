"""The local stack: monitor, db_service and api_service as child processes (``make run``).

Each child is started with ``python -m <service>`` and counts as up once it prints its
``PACA_READY`` line. Ctrl-C / SIGTERM stops the children in reverse order (api_service first, so
its call log drains into a still-running db_service) and waits for each to exit. The e2e tests
start the stack through the same :class:`ServiceProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping

from paca_runtime.process import READY_PREFIX

START_ORDER = ("monitor", "db_service", "api_service")
# Each started child's gRPC address is handed to the ones after it under these names, so the
# stack also runs with every listen address on port 0.
WIRING = {"monitor": "PACA_MONITOR_ADDRESS", "db_service": "PACA_DB_ADDRESS"}


class ServiceProcess:
    """A service running as a child process.

    Args:
        module: The service package, run as ``python -m module``.
        env: Extra environment for the child.
    """

    def __init__(self, module: str, env: Mapping[str, str] | None = None) -> None:
        self.module = module
        self.env = {**os.environ, **(env or {})}
        self.addresses: dict[str, str] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<ServiceProcess {self.module} pid={pid} addresses={self.addresses}>"

    async def start(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Start the child and wait for its ready line; returns its addresses."""
        # A session of its own: Ctrl-C in a terminal signals the launcher's process group only,
        # and the launcher then stops each child once, in order (a second signal would force it).
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    code = await self.proc.wait()
                    raise RuntimeError(f"{self.module} exited with {code} before it was ready")
                text = line.decode(errors="replace")
                if text.startswith(READY_PREFIX):
                    self.addresses = json.loads(text[len(READY_PREFIX) :])
                    break
                sys.stdout.write(text)
        self._relay = asyncio.create_task(self._relay_stdout())
        return self.addresses

    async def _relay_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            sys.stdout.write(line.decode(errors="replace"))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal if the child still runs."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signum)

    async def wait(self, timeout_s: float = 30.0) -> int | None:
        """Wait for the child to exit by itself; returns its exit code."""
        if self.proc is None:
            return None
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
        if self._relay is not None:
            await self._relay
        return code

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code. Idempotent."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._relay is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
        return code

    def kill(self) -> None:
        """SIGKILL: the crash of a real process, for tests."""
        self.signal(signal.SIGKILL)


async def run_stack() -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    started: list[ServiceProcess] = []
    # Text logs read better in a terminal; PACA_LOG_FORMAT=json still wins when set.
    wiring: dict[str, str] = {"PACA_LOG_FORMAT": os.environ.get("PACA_LOG_FORMAT", "text")}
    try:
        for module in START_ORDER:
            child = ServiceProcess(module, wiring)
            started.append(child)
            await child.start()
            if module in WIRING:
                wiring[WIRING[module]] = child.addresses["grpc"]
        print("\nPACA Integrations is running (Ctrl-C stops it):", flush=True)
        for child in started:
            roles = ", ".join(
                f"{role} {addr}"
                for role, addr in child.addresses.items()
                if role not in {"service", "pid"}
            )
            print(f"  {child.module:<12} {roles}", flush=True)
        waiters = [asyncio.create_task(c.proc.wait()) for c in started if c.proc is not None]
        stop_task = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([stop_task, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stop_task not in done:
            print("a service exited unexpectedly; stopping the stack", file=sys.stderr)
        stop_task.cancel()
        return 0 if stop_task in done else 1
    except (RuntimeError, TimeoutError) as exc:
        print(f"the stack did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(started):
            await child.stop()


def main() -> None:
    sys.exit(asyncio.run(run_stack()))


if __name__ == "__main__":
    main()
