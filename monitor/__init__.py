"""The monitor sidecar: psutil samples, report intake, ``/metrics`` and a status page.

Services push their figures over ``paca.monitor.v1.MonitorService``; the monitor samples the
host and each reporting process, judges every instance UP, STOPPED or DOWN, and exposes it all
to Prometheus. Run it with ``python -m monitor``.
"""

from monitor.app import MonitorApp, build
from monitor.collector import HostCollector
from monitor.exposition import ExpositionServer, MonitorMetrics
from monitor.registry import InstanceRecord, InstanceStatus, ServiceRegistry, validate_report
from monitor.sampler import Sampler
from monitor.servicer import MonitorServicer
from monitor.settings import MonitorSettings

__all__ = [
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
]
