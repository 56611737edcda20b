"""Each package's public surface is pinned, so it changes on purpose."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.unit

PUBLIC = {
    "api_service": {
        "APIRegistry",
        "ApiApp",
        "ApiError",
        "ApiSettings",
        "CallLogSettings",
        "CallRecorder",
        "DbServiceSink",
        "HttpRequest",
        "HttpResponse",
        "HttpTransport",
        "InvalidCall",
        "OutboundCaller",
        "Spool",
        "UnknownEndpoint",
        "UpstreamError",
        "UpstreamTimeout",
        "UpstreamUnavailable",
    },
    "db_service": {
        "Backend",
        "BadStatement",
        "ConstraintViolation",
        "DatabaseSettings",
        "Databases",
        "DbApp",
        "DbError",
        "DbSettings",
        "DbUnavailable",
        "Migration",
        "MigrationError",
        "MigrationManager",
        "ResultSet",
        "StatementTimeout",
        "UnknownDatabase",
    },
    "monitor": {
        "ExpositionServer",
        "HostCollector",
        "InstanceRecord",
        "InstanceStatus",
        "MonitorApp",
        "MonitorMetrics",
        "MonitorServicer",
        "MonitorSettings",
        "Sampler",
        "ServiceRegistry",
        "build",
        "validate_report",
    },
    "paca_runtime": {
        "GrpcServer",
        "InvalidArgument",
        "MonitorReporter",
        "NotFound",
        "READY_PREFIX",
        "RuntimeSettings",
        "Service",
        "SettingsError",
        "SettingsSource",
        "StatusError",
        "Unavailable",
        "counter",
        "gauge",
        "run",
        "translate_errors",
    },
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_exported_names_are_pinned_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == PUBLIC[package]
    for name in module.__all__:
        assert getattr(module, name) is not None
