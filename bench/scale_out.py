"""Throughput of api_service (with its call log to db_service) with 1 and 2 processes per service.

Two processes share each port through SO_REUSEPORT (PACA_API_REUSE_PORT / PACA_DB_REUSE_PORT),
the way a deployment uses every core; the load comes over several client channels (one TCP
connection each) so the kernel spreads them. Both layouts run in the same invocation against the
same local upstream, which runs in its own process.

    .venv/bin/python bench/scale_out.py [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
from pathlib import Path

import grpc
from harness import UPSTREAM, Figures, free_port, measure, wait_for_port
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc

from paca_runtime.stack import ServiceProcess


async def load(address: str, url: str, seconds: float, concurrency: int) -> Figures:
    # Eight channels, eight TCP connections: SO_REUSEPORT spreads connections, not calls.
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    stubs = itertools.cycle([api_service_pb2_grpc.ApiServiceStub(c) for c in channels])
    request = api_service_pb2.CallRequest(url=url, provider="bench")

    async def one() -> None:
        await next(stubs).Call(request, timeout=10)

    try:
        return await measure(one, seconds, concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def run_layout(processes: int, url: str, seconds: float, concurrency: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        api_port, db_port = free_port(), free_port()
        env = {
            "PACA_STATE_DIR": tmp,
            "PACA_MONITOR_ADDRESS": "",
            "PACA_LOG_LEVEL": "WARNING",
            "PACA_API_LISTEN": f"127.0.0.1:{api_port}",
            "PACA_DB_LISTEN": f"127.0.0.1:{db_port}",
            "PACA_DB_ADDRESS": f"127.0.0.1:{db_port}",
            "PACA_API_REUSE_PORT": "true",
            "PACA_DB_REUSE_PORT": "true",
        }
        children = [ServiceProcess("db_service", env) for _ in range(processes)]
        children += [
            ServiceProcess(
                "api_service", {**env, "PACA_CALLLOG_SPOOL_DIR": str(Path(tmp) / f"spool{i}")}
            )
            for i in range(processes)
        ]
        try:
            for child in children:
                await child.start()
            rate, p50, p99 = await load(f"127.0.0.1:{api_port}", url, seconds, concurrency)
        finally:
            for child in reversed(children):
                await child.stop()
    return (
        f"{processes} process(es) per service: {rate:8.0f} calls/s"
        f"   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    port = free_port()
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-c", UPSTREAM, str(port))
    try:
        url = f"http://127.0.0.1:{port}/ok"
        await wait_for_port(port)
        print(
            f"ApiService.Call -> local upstream, concurrency {options.concurrency}, "
            f"{options.seconds:g} s per layout, {len(os.sched_getaffinity(0))} cores"
        )
        for processes in (1, 2):
            print(
                await run_layout(processes, url, options.seconds, options.concurrency), flush=True
            )
    finally:
        upstream.terminate()
        await upstream.wait()


if __name__ == "__main__":
    asyncio.run(main())
