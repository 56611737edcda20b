"""What every benchmark here shares: free ports, waiting for a server, a closed-loop load.

The scripts run as ``python bench/<name>.py``, so this module is imported by its plain name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

# The local upstream of the api_service benchmarks: `python -c UPSTREAM <port>` answers
# GET /ok with a small JSON body.
UPSTREAM = """
import sys
from aiohttp import web
async def ok(request):
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_get("/ok", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

# calls/s, p50 ms, p99 ms
Figures = tuple[float, float, float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(port: int) -> None:
    """Return once something accepts connections on 127.0.0.1:``port`` (another process)."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def measure(one: Callable[[], Awaitable[None]], seconds: float, concurrency: int) -> Figures:
    """``concurrency`` workers call ``one`` back to back for ``seconds`` after a warm-up call
    each; returns calls/s and the p50 / p99 latency in milliseconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    for _ in range(concurrency):  # warm up connections
        await one()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


async def run_calls(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> None:
    """Make ``calls`` calls of ``call`` in all, ``concurrency`` at a time."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def cpu_per_call(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int
) -> float:
    """CPU microseconds this process spends per call while ``concurrency`` workers make
    ``calls`` calls of ``call`` in all."""
    started = time.process_time()
    await run_calls(call, calls, concurrency)
    return (time.process_time() - started) / calls * 1e6


def report_layers(
    script: str,
    run: Coroutine[Any, Any, dict[str, float]],
    argv: list[str],
    *,
    baseline: str | None,
    print_raw: bool,
    title: str,
    over_floor: Callable[[str], bool],
) -> None:
    """Run a layer gauge's ``run`` (on uvloop, as the services run) and print its figures,
    CPU µs per call, beside ``baseline``'s (the same ``script`` and ``argv`` on an older
    tree); ``over_floor`` names the lines that also show how much they add to the first."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        figures = asyncio.run(run)
    else:
        figures = uvloop.run(run)
    if print_raw:
        for name, value in figures.items():
            print(f"{name}\t{value}")
        return
    base = baseline_figures(script, baseline, argv) if baseline else {}
    print(title)
    floor = next(iter(figures.values()))
    width = max(len(name) for name in figures) + 4
    for name, value in figures.items():
        extra = f"   +{value - floor:5.1f} over (a)" if over_floor(name) else ""
        before = f"   baseline {base[name]:6.1f}" if name in base else ""
        print(f"{name:{width}} {value:6.1f}{extra}{before}")


def baseline_figures(script: str, code: str, argv: list[str]) -> dict[str, float]:
    """The figures ``script`` prints with ``--print-raw`` (``name<TAB>value`` lines) when it
    runs on ``code``'s tree in a child process."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{os.path.dirname(script)}"}
    # Off sys.path: this tree (the working directory, the script's own), so ``code`` is used.
    env["PYTHONSAFEPATH"] = "1"
    out = subprocess.run(
        [sys.executable, script, *argv, "--print-raw"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        name: float(value)
        for name, _, value in (line.rpartition("\t") for line in out.splitlines() if "\t" in line)
    }
