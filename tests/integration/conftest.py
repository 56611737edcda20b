"""In-process services on real sockets (port 0), with SQLite in a temporary directory; a
PostgreSQL primary and streaming replica of their own (scripts/pg_replica.sh) for the tests of
replica routing, health checks and failover (here, so one shared pair serves every module)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiohttp import web
from paca.api.v1 import api_service_pb2_grpc
from paca.db.v1 import db_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from db_service import DatabaseSettings, DbApp, DbSettings
from paca_runtime import RuntimeSettings
from tests.conftest import backing_url


class CuttableProxy:
    """A TCP forwarder to a live server (Redis, db_service) that a test can cut, making the server
    unreachable, and start again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


@pytest.fixture
async def traceparent_echo_url() -> AsyncIterator[str]:
    """A server that answers with every ``traceparent`` header it received, as a JSON list."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(request.headers.getall("traceparent", []))

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def runtime_settings(tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings(monitor_address="", state_dir=tmp_path, shutdown_grace_s=2.0)


@pytest.fixture
async def db_app(tmp_path: Path) -> AsyncIterator[DbApp]:
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
        pool_size=4,
    )
    app = DbApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def db_stub(db_app: DbApp) -> AsyncIterator[db_service_pb2_grpc.DbServiceStub]:
    async with grpc.aio.insecure_channel(db_app.server.bound_address) as channel:
        yield db_service_pb2_grpc.DbServiceStub(channel)


@pytest.fixture
async def api_app(db_app: DbApp, tmp_path: Path) -> AsyncIterator[ApiApp]:
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address=db_app.server.bound_address,
        api_timeout_s=5.0,
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
    )
    app = ApiApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def api_stub(api_app: ApiApp) -> AsyncIterator[api_service_pb2_grpc.ApiServiceStub]:
    async with grpc.aio.insecure_channel(api_app.server.bound_address) as channel:
        yield api_service_pb2_grpc.ApiServiceStub(channel)


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pg_replica.sh"


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port")


@dataclass
class PgPair:
    """A primary and its streaming replica (scripts/pg_replica.sh), for one test."""

    directory: Path
    primary_port: int
    replica_port: int

    @staticmethod
    def url(port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    async def run(self, *args: str) -> None:
        """Run a pg_replica.sh command without blocking the event loop (the service under
        test runs in it)."""
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()

    async def fetchval(self, port: int, sql: str) -> object:
        conn = await asyncpg.connect(self.url(port))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


@contextmanager
def _running_pair() -> Iterator[PgPair]:
    # Same rule as the shared engines: skip locally when none is set up, fail under CI.
    backing_url("PACA_TEST_POSTGRES_URL")
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        message = "PostgreSQL server binaries are not installed (scripts/backing_services.sh up)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = ROOT / "var" / "pg_replica" / uuid.uuid4().hex[:8]
    primary_port = _free_port(55432)
    replica_port = _free_port(55433 if primary_port != 55433 else 0)
    subprocess.run(
        [str(SCRIPT), "up", str(directory), str(primary_port), str(replica_port)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    try:
        yield PgPair(directory, primary_port, replica_port)
    finally:
        subprocess.run([str(SCRIPT), "down", str(directory)], check=False, timeout=60)


@pytest.fixture
def pg_pair() -> Iterator[PgPair]:
    """A fresh primary + replica under var/, removed afterwards (for tests that break it)."""
    with _running_pair() as pair:
        yield pair


@pytest.fixture(scope="session")
def shared_pg_pair() -> Iterator[PgPair]:
    """A primary + replica shared by the tests that leave both running and in sync when
    they end (setting up a pair costs seconds on a loaded machine)."""
    with _running_pair() as pair:
        yield pair
