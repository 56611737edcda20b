"""What each layer of db_service adds to a small PostgreSQL read, in this process alone.

No gRPC and no other process of ours: the layers run in this event loop against the server in
``PACA_TEST_POSTGRES_URL``, ``--concurrency`` callers over a pool of the same size for each:

(a) asyncpg: ``Connection.fetch`` on connections handed round through a queue, the floor;
(b) ``PostgresBackend.execute``: the pool, the plain-read path, result encoding, figures;
(c) ``DbServicer.Query``: (b) plus the request's checks and the reply message.

Each line is CPU microseconds per call, the least of ``--rounds`` rounds (the least is the
steadiest figure on a shared machine: load from elsewhere only ever adds). These figures are a
gauge for changes to the layers, far steadier than ``bench/db_query.py``'s throughput; inside
a loaded server every layer costs about twice as much (caches shared with gRPC and the loop).

With ``--baseline DIR`` (a copy of an older tree, e.g. `git archive HEAD | tar -x -C DIR`),
the same rounds run again in a child process on DIR's code, and both are printed.

    .venv/bin/python bench/db_layers.py [--calls 15000] [--rounds 4] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from typing import Any

import asyncpg
from harness import cpu_per_call, report_layers

SQL = "SELECT id, name FROM bench_items WHERE id = $1"
POOL_SIZE = 10


class _Context:
    """What ``DbServicer.Query`` asks of a gRPC servicer context."""

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, Any]:
        return {}


async def layers(url: str, calls: int, rounds: int, concurrency: int) -> dict[str, float]:
    # Imported here: with --baseline, the child imports them from the older tree.
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from paca.db.v1 import db_service_pb2, values_pb2

    from db_service.app import DbApp
    from db_service.settings import DbSettings
    from paca_runtime.settings import RuntimeSettings, SettingsSource

    with tempfile.TemporaryDirectory() as state:
        source = SettingsSource(
            {
                "PACA_DB_URL": url,
                "PACA_DB_LISTEN": "127.0.0.1:0",
                "DB_POOL_SIZE": str(POOL_SIZE),
                "PACA_MONITOR_ADDRESS": "",
                "PACA_STATE_DIR": state,
            }
        )
        runtime = RuntimeSettings.from_source(source)
        app = DbApp(DbSettings.from_source(source, runtime), runtime)
        await app.start()
        idle: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for _ in range(POOL_SIZE):
            idle.put_nowait(await asyncpg.connect(url))
        # Under an unsampled parent, as a call without trace context runs in the server.
        dropped = trace.NonRecordingSpan(
            trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(0))
        )
        token = otel_context.attach(trace.set_span_in_context(dropped))
        try:
            backend = app.databases.get("")
            servicer, context = app.servicer, _Context()
            request = db_service_pb2.QueryRequest(
                sql=SQL, params=[values_pb2.Value(int64_value=1)], read_only=True
            )

            async def direct() -> None:
                conn = await idle.get()
                try:
                    await conn.fetch(SQL, 1, timeout=10.0)
                finally:
                    idle.put_nowait(conn)

            async def execute() -> None:
                await backend.execute(
                    SQL, [1], read_only=True, max_rows=1000, max_bytes=1 << 20, timeout_s=10.0
                )

            async def query() -> None:
                await servicer.Query(request, context)

            named = {
                "(a) asyncpg fetch": direct,
                "(b) PostgresBackend.execute": execute,
                "(c) DbServicer.Query": query,
            }
            best = dict.fromkeys(named, float("inf"))
            for _ in range(rounds):
                for name, call in named.items():
                    best[name] = min(best[name], await cpu_per_call(call, calls, concurrency))
            return best
        finally:
            otel_context.detach(token)
            while not idle.empty():
                await idle.get_nowait().close()
            await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--url", default=os.environ.get("PACA_TEST_POSTGRES_URL", ""))
    parser.add_argument("--baseline", metavar="DIR")
    parser.add_argument("--print-raw", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if not options.url:
        sys.exit("set PACA_TEST_POSTGRES_URL (. var/backing/env) or pass --url")
    url = options.url
    if "sslmode=" not in url:
        url += ("&" if "?" in url else "?") + "sslmode=disable"
    argv = [f"--calls={options.calls}", f"--rounds={options.rounds}", f"--url={options.url}"]
    argv.append(f"--concurrency={options.concurrency}")

    async def run() -> dict[str, float]:
        setup = await asyncpg.connect(url)
        try:
            await setup.execute(
                "CREATE TABLE IF NOT EXISTS bench_items (id INTEGER PRIMARY KEY, name TEXT);"
                " INSERT INTO bench_items VALUES (1, 'hello') ON CONFLICT DO NOTHING"
            )
            return await layers(url, options.calls, options.rounds, options.concurrency)
        finally:
            await setup.close()

    report_layers(
        __file__,
        run(),
        argv,
        baseline=options.baseline,
        print_raw=options.print_raw,
        title=f"{SQL!r}, {options.concurrency} callers over {POOL_SIZE} connections; CPU us per"
        f" call, least of {options.rounds} rounds of {options.calls}",
        over_floor=lambda name: not name.startswith("(a)"),
    )


if __name__ == "__main__":
    main()
