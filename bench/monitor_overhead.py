"""The monitor's own CPU use at the default interval, beside an idle Python process's.

Starts ``python -m monitor`` as a user would (default MONITOR_INTERVAL of 10 s unless
``--interval`` says otherwise, free ports), lets two fake services report to it every interval,
and measures the monitor process's CPU time with psutil over ``--seconds``. The baseline, in the
same run, is a bare Python interpreter sleeping in a loop: what any process costs by being
alive. The target is under 1 % of one core.

    .venv/bin/python bench/monitor_overhead.py [--seconds 30] [--interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

import psutil

from paca_runtime.reporting import MonitorReporter, counter, gauge
from paca_runtime.stack import ServiceProcess

IDLE = "import time\nwhile True:\n    time.sleep(1)\n"


async def cpu_percent(pid: int, seconds: float) -> float:
    """CPU time of ``pid`` over ``seconds`` of wall time, as % of one core."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(seconds)
    after = process.cpu_times()
    elapsed = asyncio.get_running_loop().time() - started
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / elapsed


async def main(seconds: float, interval: float) -> None:
    with tempfile.TemporaryDirectory() as state:
        env = {
            "MONITOR_INTERVAL": f"{interval:g}",
            "PACA_MONITOR_LISTEN": "127.0.0.1:0",
            "PACA_METRICS_LISTEN": "127.0.0.1:0",
            "PACA_STATE_DIR": state,
            "PACA_LOG_LEVEL": "WARNING",
        }
        monitor = ServiceProcess("monitor", env)
        addresses = await monitor.start()
        idle = await asyncio.create_subprocess_exec(sys.executable, "-c", IDLE)
        reporters = [
            MonitorReporter(
                service=name,
                address="127.0.0.1:0",
                monitor_address=addresses["grpc"],
                interval_s=interval,
                figures=lambda: [counter("calls_total", 1), gauge("pool_in_use", 2)],
            )
            for name in ("api_service", "db_service")
        ]
        try:
            for reporter in reporters:
                reporter.start()
            await asyncio.sleep(interval)  # past start-up: imports, first sample
            assert monitor.proc is not None
            ours, baseline = await asyncio.gather(
                cpu_percent(monitor.proc.pid, seconds), cpu_percent(idle.pid, seconds)
            )
        finally:
            for reporter in reporters:
                await reporter.aclose()
            idle.kill()
            await idle.wait()
            await monitor.stop()
    print(f"interval {interval:g} s, measured over {seconds:g} s on {os.cpu_count()} cores")
    print(f"  baseline (idle python process)      {baseline:6.3f} % of a core")
    print(f"  monitor (2 services reporting)      {ours:6.3f} % of a core   (target < 1 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.interval))
