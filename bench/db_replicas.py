"""Reads over a primary + streaming replica vs. the primary alone, in one run.

A PostgreSQL primary and replica are built by scripts/pg_replica.sh on free ports (their own
clusters under var/, removed afterwards). Each server is pinned to its own core with taskset,
standing for two hosts (unpinned, two servers on one machine share the same cores and a replica
adds nothing to share). db_service runs as its own process, once per arm, and the load is
DbService.Query of a read that costs the database a few milliseconds:

(a) PACA_DB_URL = the primary only;
(b) the primary + PACA_DB_REPLICAS = the replica, reads with the default preference
    (replica-preferred: the replica takes every read, the primary none: offload, not capacity);
(c) the same with READ_PREFERENCE_ANY, for each balancing policy (round_robin,
    least_outstanding, latency): reads spread over both hosts.

    .venv/bin/python bench/db_replicas.py [--seconds 5] [--concurrency 16] [--rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import grpc
from harness import Figures, free_port, measure
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from paca_runtime.stack import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pg_replica.sh"
POOL_SIZE = 8
SQL = "SELECT count(*) FROM bench_items WHERE name LIKE $1"
POLICIES = ("round_robin", "least_outstanding", "latency")


async def run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(str(SCRIPT), *args)
    if await process.wait() != 0:
        raise RuntimeError(f"pg_replica.sh {' '.join(args)} failed")


async def pin(data_dir: Path, core: int) -> None:
    """Put a server's postmaster and every process it has (and will fork) on one core."""
    pid = (data_dir / "postmaster.pid").read_text().split()[0]
    process = await asyncio.create_subprocess_exec(
        "taskset", "-a", "-p", "-c", str(core), pid, stdout=asyncio.subprocess.DEVNULL
    )
    await process.wait()


async def load(
    env: dict[str, str],
    seconds: float,
    concurrency: int,
    preference: db_types_pb2.ReadPreference.ValueType = db_types_pb2.READ_PREFERENCE_UNSPECIFIED,
) -> tuple[Figures, str]:
    """Figures of one db_service configuration, and how its reads were spread over hosts."""
    with tempfile.TemporaryDirectory() as tmp:
        db = ServiceProcess(
            "db_service",
            {
                "PACA_STATE_DIR": tmp,
                "PACA_MONITOR_ADDRESS": "",
                "PACA_LOG_LEVEL": "WARNING",
                "PACA_DB_LISTEN": "127.0.0.1:0",
                "DB_POOL_SIZE": str(POOL_SIZE),
                **env,
            },
        )
        address = (await db.start())["grpc"]
        try:
            channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
            stubs = [db_service_pb2_grpc.DbServiceStub(c) for c in channels]
            turn = 0

            request = db_service_pb2.QueryRequest(
                sql=SQL,
                params=[values_pb2.Value(string_value="%7%")],
                read_only=True,
                read_preference=preference,
            )

            async def one() -> None:
                nonlocal turn
                turn += 1
                reply = await stubs[turn % len(stubs)].Query(request, timeout=10)
                assert reply.rows[0].values[0].int64_value > 0

            figures = await measure(one, seconds, concurrency)
            stats = await stubs[0].GetStats(db_service_pb2.GetStatsRequest())
            spread = ", ".join(f"{h.role} {h.served}" for h in stats.hosts)
            for channel in channels:
                await channel.close()
        finally:
            await db.stop()
    return figures, spread or "primary only"


def line(name: str, figures: Figures, base: float | None = None, spread: str = "") -> str:
    rate, p50, p99 = figures
    ratio = f"  {rate / base:5.0%} of (a)" if base else ""
    return (
        f"{name:<34} {rate:7.0f} reads/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{ratio}"
        f"{'  [' + spread + ']' if spread else ''}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--no-pin", action="store_true", help="leave both servers unpinned")
    options = parser.parse_args()
    if not SCRIPT.exists() or not shutil.which("taskset"):
        sys.exit("needs scripts/pg_replica.sh and taskset (util-linux)")
    directory = ROOT / "var" / "pg_replica" / f"bench-{uuid.uuid4().hex[:6]}"
    primary_port, replica_port = free_port(), free_port()
    await run("up", str(directory), str(primary_port), str(replica_port))
    try:
        if not options.no_pin:
            await pin(directory / "primary", 0)
            await pin(directory / "replica", 1 % len(os.sched_getaffinity(0)))
        primary = f"postgresql://postgres@127.0.0.1:{primary_port}/postgres"
        replica = f"postgresql://postgres@127.0.0.1:{replica_port}/postgres"
        # Commits wait until the replica applied them: it has the table before any read.
        await run("sync", "on", str(directory))
        setup = await asyncpg.connect(primary)
        await setup.execute(
            "SET synchronous_commit = remote_apply;"
            " CREATE TABLE bench_items (id integer PRIMARY KEY, name text NOT NULL);"
            " INSERT INTO bench_items SELECT n, md5(n::text)"
            f" FROM generate_series(1, {options.rows}) n;"
            " ANALYZE bench_items;"
        )
        await setup.close()
        print(
            f"{SQL!r} over {options.rows} rows, concurrency {options.concurrency},"
            f" {options.seconds:g} s each, pool {POOL_SIZE} per host,"
            f" {len(os.sched_getaffinity(0))} cores,"
            f" servers {'unpinned' if options.no_pin else 'pinned to a core each'}"
        )
        base, _ = await load({"PACA_DB_URL": primary}, options.seconds, options.concurrency)
        print(line("(a) primary alone", base), flush=True)
        routed = {"PACA_DB_URL": primary, "PACA_DB_REPLICAS": f"main={replica}"}
        figures, spread = await load(routed, options.seconds, options.concurrency)
        print(line("(b) replica-preferred (default)", figures, base[0], spread), flush=True)
        for policy in POLICIES:
            figures, spread = await load(
                {**routed, "PACA_DB_READ_POLICY": policy},
                options.seconds,
                options.concurrency,
                db_types_pb2.READ_PREFERENCE_ANY,
            )
            print(line(f"(c) any host, {policy}", figures, base[0], spread), flush=True)
    finally:
        await run("down", str(directory))


if __name__ == "__main__":
    asyncio.run(main())
