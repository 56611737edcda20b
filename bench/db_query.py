"""DbService.Query of a small row beside its floors, and StreamQuery rows/s, in one run.

Against the same PostgreSQL, at one concurrency:

(a) direct asyncpg: this process queries through its own pool (the same size as db_service's),
    the ceiling of the database side;
(a2) asyncpg through PgBouncer (Debian package ``pgbouncer``, started here on a free port with a
    generated ini, transaction pooling, the same pool size to the server): the usual external
    pooler, for comparison; asyncpg's statement cache is off (PgBouncer 1.18 does not carry
    prepared statements across transactions), so each call is a parse + bind + execute;
(b) a bare grpc.aio echo (its own process) answering Query with a canned row: the floor for any
    Python gRPC service, no database behind it;
(c) db_service (its own process): Query with the same SQL and parameter;
(d) db_service: Select through the query builder (schema check + SQLAlchemy compile per call).
Every server is started once; the loads then take turns for ``--rounds`` rounds (with
``--baseline``, the two db_services swap places every round), so drift on a shared machine
spreads evenly, and each line of the summary is the median of its rounds. Beside throughput,
a server's line shows the CPU time it spent per call (all its threads), which moves much less
than throughput when other work shares the host. Then rows/s of one large result: asyncpg's
cursor in this process vs. StreamQuery.

    set -a; . var/backing/env; set +a
    .venv/bin/python bench/db_query.py [--seconds 5] [--concurrency 32] [--rounds 3]
        [--stream-rows 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import grpc
import psutil
from harness import Figures, free_port, measure, wait_for_port
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2, values_pb2

from paca_runtime.stack import ServiceProcess

POOL_SIZE = 10
SQL = "SELECT id, name FROM bench_items WHERE id = $1"
STREAM_SQL = "SELECT n, 'row ' || n AS label FROM generate_series(1, {rows}) AS n"

ECHO = """
import asyncio, sys
import grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

REPLY = db_service_pb2.QueryResponse(
    columns=[values_pb2.Column(name="id"), values_pb2.Column(name="name")],
    rows=[values_pb2.Row(values=[values_pb2.Value(int64_value=1),
                                 values_pb2.Value(string_value="hello")])],
)

class Echo(db_service_pb2_grpc.DbServiceServicer):
    async def Query(self, request, context):
        return REPLY

async def main():
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    server = grpc.aio.server()
    db_service_pb2_grpc.add_DbServiceServicer_to_server(Echo(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


PGBOUNCER_INI = """
[databases]
bench = host={host} port={port} dbname={dbname} user={user} password={password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = transaction
default_pool_size = {pool}
max_client_conn = 1000
logfile = {log}
pidfile =
ignore_startup_parameters = extra_float_digits
"""


def pgbouncer_config(directory: Path, url: str, listen: int, pool: int) -> list[str]:
    """Write PgBouncer's ini and users file into ``directory``; the command line to run it."""
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        PGBOUNCER_INI.format(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=parts.path.lstrip("/"),
            user=user,
            password=unquote(parts.password or ""),
            listen=listen,
            auth_file=directory / "users.txt",
            pool=pool,
            log=directory / "pgbouncer.log",
        )
    )
    ini.chmod(0o600)
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if os.geteuid() != 0:
        return [binary, "-q", str(ini)]
    # pgbouncer refuses to run as root: it drops to an unprivileged user, who must read these.
    for path in (directory, *directory.iterdir()):
        shutil.chown(path, "nobody")
    return [binary, "-q", "-u", "nobody", str(ini)]


@contextlib.asynccontextmanager
async def pgbouncer(url: str, pool: int) -> AsyncIterator[str | None]:
    """A PgBouncer in front of ``url``'s server on a free port; yields the URL to reach it
    (None when pgbouncer is not installed: ``apt-get install pgbouncer``)."""
    if shutil.which("pgbouncer") is None and not await asyncio.to_thread(
        Path("/usr/sbin/pgbouncer").exists
    ):
        yield None
        return
    listen = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = await asyncio.to_thread(pgbouncer_config, Path(tmp), url, listen, pool)
        process = await asyncio.create_subprocess_exec(*command)
        try:
            await wait_for_port(listen)
            yield f"postgresql://{urlsplit(url).username}@127.0.0.1:{listen}/bench"
        finally:
            process.terminate()
            await process.wait()


async def asyncpg_load(
    url: str, seconds: float, concurrency: int, **pool_options: object
) -> Figures:
    pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, **pool_options)
    try:

        async def direct() -> None:
            assert await pool.fetchrow(SQL, 1) is not None

        return await measure(direct, seconds, concurrency)
    finally:
        await pool.close()


class ServerCpu:
    """CPU time the server process (all its threads) spent per call during a load: unlike
    calls/s, it does not depend on what else runs on the host."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.ms_per_call = 0.0

    def _seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    @contextlib.asynccontextmanager
    async def counting(self, calls: Callable[[], float]) -> AsyncIterator[None]:
        before = self._seconds()
        yield
        self.ms_per_call = (self._seconds() - before) * 1000 / max(1.0, calls())


def server_cpu(service: ServiceProcess) -> ServerCpu:
    assert service.proc is not None
    return ServerCpu(service.proc.pid)


async def grpc_load(
    address: str,
    call: Callable[[db_service_pb2_grpc.DbServiceStub], Awaitable[None]],
    seconds: float,
    concurrency: int,
    cpu: ServerCpu | None = None,
) -> Figures:
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    stubs = [db_service_pb2_grpc.DbServiceStub(c) for c in channels]
    turn = 0

    async def one() -> None:
        nonlocal turn
        turn += 1
        await call(stubs[turn % len(stubs)])

    try:
        if cpu is None:
            return await measure(one, seconds, concurrency)
        async with cpu.counting(lambda: turn):
            return await measure(one, seconds, concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def query(stub: db_service_pb2_grpc.DbServiceStub) -> None:
    request = db_service_pb2.QueryRequest(
        sql=SQL, params=[values_pb2.Value(int64_value=1)], read_only=True
    )
    reply = await stub.Query(request, timeout=10)
    assert len(reply.rows) == 1


async def select(stub: db_service_pb2_grpc.DbServiceStub) -> None:
    where = db_types_pb2.Filter(
        comparison=db_types_pb2.Filter.Comparison(
            column="id",
            operator=db_types_pb2.FILTER_OPERATOR_EQ,
            values=[values_pb2.Value(int64_value=1)],
        )
    )
    request = db_service_pb2.SelectRequest(
        select=db_types_pb2.Select(table="bench_items", columns=["id", "name"], where=where)
    )
    reply = await stub.Select(request, timeout=10)
    assert len(reply.rows) == 1


def line(
    name: str, figures: Figures, base: float | None = None, cpu_ms: float | None = None
) -> str:
    rate, p50, p99 = figures
    ratio = f"   {rate / base:4.0%} of (b)" if base else ""
    server = f"   server CPU {cpu_ms:5.3f} ms/call" if cpu_ms is not None else ""
    return f"{name:<34} {rate:6.0f} calls/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{server}{ratio}"


async def stream_rates(url: str, address: str, rows: int) -> tuple[float, float]:
    sql = STREAM_SQL.format(rows=rows)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        count = 0
        async with conn.transaction():
            async for _ in conn.cursor(sql, prefetch=1000):
                count += 1
        direct = count / (time.perf_counter() - started)
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = db_service_pb2_grpc.DbServiceStub(channel)
        started = time.perf_counter()
        count = 0
        async for chunk in stub.StreamQuery(db_service_pb2.StreamQueryRequest(sql=sql)):
            count += len(chunk.rows)
        streamed = count / (time.perf_counter() - started)
    assert count == rows
    return direct, streamed


def db_env(url: str, state_dir: str, code: str | None = None) -> dict[str, str]:
    env = {
        "PACA_STATE_DIR": state_dir,
        "PACA_MONITOR_ADDRESS": "",
        "PACA_LOG_LEVEL": "WARNING",
        "PACA_DB_LISTEN": "127.0.0.1:0",
        "PACA_DB_URL": url,
        "DB_POOL_SIZE": str(POOL_SIZE),
    }
    if code:
        # PYTHONSAFEPATH keeps the working directory (maybe this tree) off sys.path, so the
        # code in ``code`` shadows the installed packages rather than the other way round.
        env["PYTHONPATH"] = code
        env["PYTHONSAFEPATH"] = "1"
    return env


Measured = tuple[Figures, float | None]  # figures, server CPU ms/call


def summary(name: str, runs: list[Measured], base: float | None = None) -> str:
    rate = statistics.median(f[0] for f, _ in runs)
    p50 = statistics.median(f[1] for f, _ in runs)
    p99 = statistics.median(f[2] for f, _ in runs)
    cpus = [c for _, c in runs if c is not None]
    return line(name, (rate, p50, p99), base, statistics.median(cpus) if cpus else None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-rows", type=int, default=200_000)
    parser.add_argument("--url", default=os.environ.get("PACA_TEST_POSTGRES_URL", ""))
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run (c) with db_service's code from DIR (e.g. `git archive HEAD | tar -x -C"
        " DIR`), in the same run, to compare a change before and after",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="keep the URL's TLS setting (default: sslmode=disable, as PgBouncer talks to the"
        " server by default, so every arm pays the same for the database connection)",
    )
    options = parser.parse_args()
    if not options.url:
        sys.exit("set PACA_TEST_POSTGRES_URL (. var/backing/env) or pass --url")
    if not options.tls and "sslmode=" not in options.url:
        options.url += ("&" if "?" in options.url else "?") + "sslmode=disable"
    setup = await asyncpg.connect(options.url)
    await setup.execute(
        "DROP TABLE IF EXISTS bench_items;"
        " CREATE TABLE bench_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        " INSERT INTO bench_items VALUES (1, 'hello');"
    )
    echo_port = free_port()
    echo = await asyncio.create_subprocess_exec(sys.executable, "-c", ECHO, str(echo_port))
    runs: dict[str, list[Measured]] = {}
    seconds, concurrency = options.seconds, options.concurrency

    def record(name: str, figures: Figures, cpu_ms: float | None = None) -> None:
        runs.setdefault(name, []).append((figures, cpu_ms))
        print(f"  round {round_number + 1} " + line(name, figures, None, cpu_ms), flush=True)

    async def load(name: str, address: str, call: Any, pid: int | None) -> None:
        cpu = ServerCpu(pid) if pid is not None else None
        figures = await grpc_load(address, call, seconds, concurrency, cpu)
        record(name, figures, cpu.ms_per_call if cpu else None)

    try:
        with contextlib.ExitStack() as dirs:
            services = {}
            codes = {"(c) db_service Query": None}
            if options.baseline:
                codes = {"(c0) db_service Query, baseline": options.baseline, **codes}
            for name, code in codes.items():
                tmp = dirs.enter_context(tempfile.TemporaryDirectory())
                services[name] = ServiceProcess("db_service", db_env(options.url, tmp, code))
            addresses = {name: (await db.start())["grpc"] for name, db in services.items()}
            pids = {name: db.proc.pid for name, db in services.items() if db.proc}
            await wait_for_port(echo_port)
            print(
                f"{SQL!r} at concurrency {concurrency}, {seconds:g} s x {options.rounds} rounds"
                f" each, pool {POOL_SIZE}, {len(os.sched_getaffinity(0))} cores, database TLS"
                f" {'as in the URL' if options.tls else 'off'}; each line of the summary is the"
                " median of its rounds",
                flush=True,
            )
            try:
                async with pgbouncer(options.url, POOL_SIZE) as bouncer_url:
                    for round_number in range(options.rounds):
                        figures = await asyncpg_load(options.url, seconds, concurrency)
                        record("(a) direct asyncpg", figures)
                        if bouncer_url is not None:
                            figures = await asyncpg_load(
                                bouncer_url, seconds, concurrency, statement_cache_size=0
                            )
                            record("(a2) asyncpg via PgBouncer (tx pool)", figures)
                        await load(
                            "(b) bare grpc.aio echo", f"127.0.0.1:{echo_port}", query, echo.pid
                        )
                        # Before and after take turns going first, so drift hits both alike.
                        order = list(addresses.items())
                        for name, address in order if round_number % 2 == 0 else order[::-1]:
                            await load(name, address, query, pids[name])
                        main_name = "(c) db_service Query"
                        await load(
                            "(d) db_service Select (builder)",
                            addresses[main_name],
                            select,
                            pids[main_name],
                        )
                    direct_rate, stream_rate = await stream_rates(
                        options.url, addresses[main_name], options.stream_rows
                    )
            finally:
                for db in services.values():
                    await db.stop()
        if bouncer_url is None:
            print("(a2) skipped: pgbouncer is not installed (apt-get install pgbouncer)")
        print("medians:")
        echo_runs = runs["(b) bare grpc.aio echo"]
        echo_rate = statistics.median(f[0] for f, _ in echo_runs)
        echo_cpu = statistics.median(c for _, c in echo_runs if c is not None)
        for name, name_runs in runs.items():
            base = echo_rate if name.startswith(("(c", "(d")) else None
            print(summary(name, name_runs, base))
            if name.startswith("(c"):
                cpu = statistics.median(c for _, c in name_runs if c is not None)
                print(
                    f"    echo's server CPU per call / this one's: {echo_cpu / cpu:.0%} (the"
                    " calls/s ratio on a core of its own; the database's processes not counted)"
                )
        print(
            f"{options.stream_rows} rows: asyncpg cursor {direct_rate:,.0f} rows/s,"
            f" StreamQuery {stream_rate:,.0f} rows/s ({stream_rate / direct_rate:.0%})"
        )
    finally:
        if echo.returncode is None:
            echo.terminate()
            await echo.wait()
        await setup.execute("DROP TABLE IF EXISTS bench_items")
        await setup.close()


if __name__ == "__main__":
    asyncio.run(main())
