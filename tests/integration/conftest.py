"""In-process services on real sockets (port 0), with SQLite in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from paca.api.v1 import api_service_pb2_grpc
from paca.db.v1 import db_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from db_service import DatabaseSettings, DbApp, DbSettings
from paca_runtime import RuntimeSettings


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
