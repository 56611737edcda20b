"""DocumentService when MongoDB goes away or stalls, with credentials, and with permissions.

The faults are real: a TCP relay in front of the test server is closed (connections reset, port
refused) or stops relaying (requests reach nobody), so the driver sees what it would see from a
dead or hung server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from paca.db.v1 import document_service_pb2 as pb
from paca.db.v1 import document_service_pb2_grpc as pb_grpc

from db_service.app import DbApp
from db_service.document.config import mongo_database
from db_service.settings import ClientPolicy, DatabaseSettings, DbSettings
from paca_runtime.channels import open_channel
from paca_runtime.security import SecuritySettings, TokenEntry, TokenTable, token_digest
from tests.integration.conftest import runtime_settings
from tests.integration.test_db_mongo import database_url, failure, serve

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    # pymongo's async connect leaves its socket open when the connect is cancelled (a client
    # closed, or server selection giving up, while a monitor is connecting to a dead relay):
    # a leak in the driver (mongo-python-driver PYTHON-3923, unfixed), reaped below.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.fixture(autouse=True)
def reap_driver_sockets() -> Iterator[None]:
    """Finalise sockets the driver dropped while this module's warning filter applies, rather
    than whenever a later test's garbage collection finds them."""
    yield
    gc.collect()


PASSWORD = "s3cret-Pw-9d1f"


class Relay:
    """A TCP relay to the MongoDB server: ``pause()`` holds traffic, ``close()`` kills it."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, name: str, userinfo: str = "") -> str:
        return f"mongodb://{userinfo}127.0.0.1:{self.port}/{name}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    def pause(self) -> None:
        self.flowing.clear()

    async def close(self) -> None:
        """Refuse new connections and reset the open ones: the server is gone."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(mongodb_url: str) -> AsyncIterator[Relay]:
    parts = urlsplit(mongodb_url)
    relay = await Relay(parts.hostname or "127.0.0.1", parts.port or 27017).start()
    try:
        yield relay
    finally:
        relay.flowing.set()
        await relay.close()


def count(timeout_s: float | None = None) -> pb.CountDocumentsRequest:
    request = pb.CountDocumentsRequest(collection="c")
    if timeout_s is not None:
        request.timeout.FromMilliseconds(int(timeout_s * 1000))
    return request


async def test_mongo_server_gone_is_unavailable_within_the_selection_timeout(
    relay: Relay, tmp_path: Path
) -> None:
    db = mongo_database("docs", relay.url(f"paca_it_{uuid.uuid4().hex[:8]}"))
    db = dataclasses.replace(db, server_selection_timeout_s=1.0)
    async with serve(tmp_path, db) as (_, stub):
        assert (await stub.CountDocuments(count())).count == 0
        await relay.close()
        for call in (
            stub.CountDocuments(count()),
            stub.InsertDocuments(pb.InsertDocumentsRequest(collection="c", documents=["{}"])),
        ):
            started = time.monotonic()
            error = await failure(call)
            elapsed = time.monotonic() - started
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert "docs" in (error.details() or "")
            assert elapsed < 3.0, (elapsed, error.details())


async def test_mongo_stalled_server_answers_deadline_exceeded_and_recovers(
    relay: Relay, tmp_path: Path
) -> None:
    async with serve(tmp_path, mongo_database("docs", relay.url("paca_it_stall"))) as (_, stub):
        assert (await stub.CountDocuments(count())).count == 0
        relay.pause()
        started = time.monotonic()
        # The request's own limit (0.3 s), well inside the caller's deadline (10 s).
        error = await failure(stub.CountDocuments(count(timeout_s=0.3), timeout=10))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
        assert time.monotonic() - started < 2.0
        # The caller's deadline alone bounds a stream the same way.
        started = time.monotonic()

        async def drain() -> None:
            async for _ in stub.FindDocuments(pb.FindDocumentsRequest(collection="c"), timeout=0.5):
                pass

        error = await failure(drain())
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0
        relay.flowing.set()
        assert (await stub.CountDocuments(count(), timeout=10)).count == 0


async def test_mongo_credentials_never_reach_errors_stats_or_logs(
    relay: Relay, mongodb_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    live = database_url(mongodb_url, "paca_it_auth").replace("://", f"://paca:{PASSWORD}@", 1)
    gone = dataclasses.replace(
        mongo_database("gone", relay.url("x", f"paca:{PASSWORD}@")),
        server_selection_timeout_s=0.5,
    )
    await relay.close()
    async with serve(tmp_path, mongo_database("live", live), gone) as (app, stub):
        messages = []
        for name in ("live", "gone"):
            request = pb.CountDocumentsRequest(database=name, collection="c")
            request.timeout.FromSeconds(5)
            error = await failure(stub.CountDocuments(request))
            expected = {
                "live": grpc.StatusCode.FAILED_PRECONDITION,
                "gone": grpc.StatusCode.UNAVAILABLE,
            }
            assert error.code() == expected[name], error.details()
            messages.append(error.details() or "")
        stats = await stub.GetDocumentStats(pb.GetDocumentStatsRequest())
        text = " ".join(messages) + str(stats) + repr(app.documents) + caplog.text
        text += " ".join(repr(b) for b in app.documents)
        assert PASSWORD not in text
        assert {d.target for d in stats.databases} == {
            database_url(mongodb_url, "paca_it_auth"),
            relay.url("x"),
        }


async def test_mongo_read_only_database_refuses_every_write(
    mongodb_url: str, tmp_path: Path
) -> None:
    url = database_url(mongodb_url, f"paca_it_{uuid.uuid4().hex[:8]}") + "?read_only=true"
    out = pb.AggregateDocumentsRequest(collection="c", pipeline='[{"$out": "copy"}]')
    async with serve(tmp_path, mongo_database("ro", url)) as (_, stub):
        assert (await stub.CountDocuments(pb.CountDocumentsRequest(collection="c"))).count == 0
        for call in (
            stub.InsertDocuments(pb.InsertDocumentsRequest(collection="c", documents=["{}"])),
            stub.DeleteDocuments(pb.DeleteDocumentsRequest(collection="c", filter='{"a": 1}')),
            stub.CreateIndex(pb.CreateIndexRequest(collection="c", keys='{"a": 1}')),
            drain(stub.AggregateDocuments(out)),
        ):
            error = await failure(call)
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "read-only" in (error.details() or "")


async def drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


CLIENTS = {
    "reader": ("reader-token", {"db.read"}),
    "reports": ("reports-token", {"db.write"}),
    "app": ("app-token", {"db.write"}),
}


@pytest.fixture
async def secured(mongodb_url: str, tmp_path: Path) -> AsyncIterator[DbApp]:
    tokens = TokenTable(
        tuple(
            TokenEntry(name, token_digest(token), frozenset(scopes))
            for name, (token, scopes) in CLIENTS.items()
        )
    )
    settings = DbSettings(
        listen="127.0.0.1:0",
        databases=(DatabaseSettings("main", f"sqlite:///{tmp_path / 'main.db'}"),),
        pool_size=2,
        clients=(ClientPolicy("reports", read_only=True),),
        mongo=(
            mongo_database("docs", database_url(mongodb_url, f"paca_it_{uuid.uuid4().hex[:8]}")),
        ),
    )
    runtime = dataclasses.replace(
        runtime_settings(tmp_path), security=SecuritySettings(tokens=tokens)
    )
    app = DbApp(settings, runtime)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def stub_for(app: DbApp, client: str) -> AsyncIterator[pb_grpc.DocumentServiceStub]:
    security = SecuritySettings(service_token=CLIENTS[client][0])
    async with open_channel(app.server.bound_address, security) as channel:
        yield pb_grpc.DocumentServiceStub(channel)


async def test_mongo_writes_need_db_write_and_a_client_that_may_write(secured: DbApp) -> None:
    insert = pb.InsertDocumentsRequest(collection="c", documents=['{"_id": 1}'])
    index = pb.CreateIndexRequest(collection="c", keys='{"a": 1}')
    for client in ("reader", "reports"):
        async with stub_for(secured, client) as stub:
            assert (await stub.CountDocuments(pb.CountDocumentsRequest(collection="c"))).count == 0
            for call in (stub.InsertDocuments(insert), stub.CreateIndex(index)):
                error = await failure(call)
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, client
            if client == "reports":
                assert "client 'reports' is read-only" in (error.details() or "")
    async with stub_for(secured, "app") as stub:
        assert len((await stub.InsertDocuments(insert)).inserted_ids) == 1
        drop = pb.DeleteDocumentsRequest(collection="c", multi=True, all_documents=True)
        assert (await stub.DeleteDocuments(drop)).deleted_count == 1
