"""CPU instructions per call of api_service's call engine, counted under valgrind.

Timing gauges (``bench/api_layers.py``) swing by ±10 % on a shared machine; an instruction
count does not: the same code gives the same count to within about 1 %. Each figure runs a
child process under ``valgrind --tool=cachegrind --cache-sim=no`` twice, making N1 and then N2
calls of one kind, and divides the difference of the two totals by N2 - N1, so start-up and
shutdown cancel out. The calls are those of ``bench/api_layers.py``, 16 at a time:

(a) aiohttp: ``ClientSession.get`` and ``read`` on a pool of its own, the floor of (b);
(b) ``OutboundCaller.call`` of a ``CallRequest`` for the same URL;
(c) a cache hit.

Instructions are not time (a cache miss costs more than an add), but fewer of them on the same
path is less CPU. With ``--baseline DIR`` (a copy of an older tree) every figure is counted on
DIR's code too, in the same run. Needs valgrind (Debian package ``valgrind``).

    .venv/bin/python bench/api_instructions.py [--calls 200,600] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys

from api_layers import engine_calls
from harness import UPSTREAM, free_port, run_calls, wait_for_port

KINDS = {"aiohttp": "(a) aiohttp get", "call": "(b) OutboundCaller.call", "hit": "(c) cache hit"}
CONCURRENCY = 16


async def child(kind: str, calls: int, port: int) -> None:
    """Make ``calls`` calls of ``kind`` against the upstream on ``port``, then exit."""
    async with engine_calls(f"http://127.0.0.1:{port}") as named:
        await run_calls(named[KINDS[kind]], calls, CONCURRENCY)


async def count(kind: str, calls: int, port: int, code: str | None) -> int:
    """Instructions of a whole child run (start-up included)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{os.path.dirname(__file__)}"
        env["PYTHONSAFEPATH"] = "1"  # this tree off sys.path, so ``code`` is used
    process = await asyncio.create_subprocess_exec(
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        kind,
        str(calls),
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    found = re.search(rb"I\s+refs:\s+([\d,]+)", err)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"the {kind} child failed:\n{err.decode(errors='replace')[-2000:]}")
    return int(found.group(1).replace(b",", b""))


async def gauge(n1: int, n2: int, baseline: str | None) -> dict[tuple[str, str], float]:
    port = free_port()
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-c", UPSTREAM, str(port))
    slots = asyncio.Semaphore(os.cpu_count() or 1)
    trees = {"now": None, **({"baseline": baseline} if baseline else {})}

    async def per_call(kind: str, code: str | None) -> float:
        async def one(calls: int) -> int:
            async with slots:
                return await count(kind, calls, port, code)

        low, high = await asyncio.gather(one(n1), one(n2))
        return (high - low) / (n2 - n1)

    try:
        await wait_for_port(port)
        jobs = {
            (kind, tree): per_call(kind, code) for kind in KINDS for tree, code in trees.items()
        }
        figures = await asyncio.gather(*jobs.values())
        return dict(zip(jobs, figures, strict=True))
    finally:
        upstream.terminate()
        await upstream.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="200,600", help="N1,N2: calls of the two runs")
    parser.add_argument("--baseline", metavar="DIR")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    # The upstream is on loopback, which the engine refuses unless allowed.
    os.environ["PACA_API_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    if options.child:
        kind, calls, port = options.child
        asyncio.run(child(kind, int(calls), int(port)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    n1, n2 = (int(n) for n in options.calls.split(","))
    figures = asyncio.run(gauge(n1, n2, options.baseline))
    print(f"{CONCURRENCY} callers; CPU instructions per call (valgrind), runs of {n1} and {n2}")
    floor = figures[("aiohttp", "now")]
    for kind, label in KINDS.items():
        value = figures[(kind, "now")]
        extra = f"   +{value - floor:8,.0f} over (a)" if kind == "call" else " " * 22
        before = figures.get((kind, "baseline"))
        versus = f"   baseline {before:9,.0f} ({value / before - 1:+.1%})" if before else ""
        print(f"{label:26} {value:9,.0f}{extra}{versus}")


if __name__ == "__main__":
    main()
