"""Runtime shared by api_service, db_service and monitor: settings, logs, tracing, servers.

It imports no service, so each service stays free to evolve behind its own contract.
"""

from paca_runtime.errors import (
    InvalidArgument,
    NotFound,
    StatusError,
    Unavailable,
    translate_errors,
)
from paca_runtime.process import READY_PREFIX, Service, run
from paca_runtime.reporting import MonitorReporter, counter, gauge
from paca_runtime.server import GrpcServer
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

__all__ = [
    "READY_PREFIX",
    "GrpcServer",
    "InvalidArgument",
    "MonitorReporter",
    "NotFound",
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
]
