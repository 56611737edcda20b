"""The alert rules the monitor runs when ``PACA_MONITOR_RULES`` names no file.

``deploy/alerts.toml`` holds the same rules, annotated, as a starting point for a rules file
(a test keeps the two equal). Thresholds lean towards few, actionable alerts: a figure must stay
bad for minutes, except where one reading is already news (a service down, a breaker open).

The figures come from the monitor itself (``paca_*``) and from what the services report:
api_service's ``api_calls_total``, ``api_call_failures_total``, ``calllog_spool_batches`` and
``api_breaker_open{endpoint}`` (1 while an endpoint's breaker is open), and db_service's
``db_pool_waiting{database}``. A rule whose figure nobody reports simply never fires.
"""

from __future__ import annotations

from typing import Final

from paca.monitor.v1 import monitor_types_pb2

from monitor.rules import AlertRule

WARNING: Final = monitor_types_pb2.SEVERITY_WARNING
CRITICAL: Final = monitor_types_pb2.SEVERITY_CRITICAL

DEFAULT_RULES: Final = (
    AlertRule(
        name="HostCpuHigh",
        metric="paca_host_cpu_usage_percent",
        op=">",
        threshold=90.0,
        for_s=300.0,
        severity=WARNING,
        summary="host CPU at $value % for 5 minutes",
    ),
    AlertRule(
        name="HostMemoryHigh",
        metric="paca_host_memory_used_percent",
        op=">",
        threshold=90.0,
        for_s=300.0,
        severity=WARNING,
        summary="host memory $value % used for 5 minutes",
    ),
    AlertRule(
        name="ServiceDown",
        metric="paca_service_state",
        match={"state": "down"},
        op="==",
        threshold=1.0,
        severity=CRITICAL,
        summary="$service $instance stopped reporting without shutting down",
    ),
    AlertRule(
        name="BreakerOpen",
        metric="api_breaker_open",
        op=">",
        threshold=0.0,
        severity=WARNING,
        summary="$service $instance: circuit breaker of endpoint $endpoint is open",
    ),
    AlertRule(
        name="DbPoolWaiters",
        metric="db_pool_waiting",
        op=">",
        threshold=0.0,
        for_s=60.0,
        severity=WARNING,
        summary="$service $instance: $value callers waiting for a $database connection",
    ),
    AlertRule(
        name="CallLogSpoolGrowing",
        metric="calllog_spool_batches",
        function="increase",
        window_s=300.0,
        op=">",
        threshold=0.0,
        for_s=120.0,
        severity=WARNING,
        summary="$service $instance: call-log spool grew by $value batches in 5 minutes",
    ),
    AlertRule(
        name="ApiErrorRate",
        metric="api_call_failures_total",
        function="ratio",
        denominator="api_calls_total",
        window_s=300.0,
        op=">",
        threshold=0.05,
        for_s=300.0,
        severity=WARNING,
        summary="$service $instance: $value of calls failed over 5 minutes",
    ),
)
