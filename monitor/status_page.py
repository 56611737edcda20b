"""The monitor's status page: one HTML document whose small script polls ``/api/status``.

The page itself is static; every ``MONITOR_INTERVAL`` its script fetches the JSON snapshot
built by :func:`status_snapshot` and redraws the services, host figures and active alerts, so
it stays live without reloading (and keeps its scroll position). Values are inserted with
``textContent``, never as HTML, since services choose their own names and addresses. Hand-written
rather than a front-end framework: about sixty lines of script, no build step, no assets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

from google.protobuf import json_format
from paca.monitor.v1 import monitor_types_pb2

from monitor.registry import DOWN, STOPPED, UP, InstanceStatus

STATE_NAMES: Final = {UP: "UP", STOPPED: "STOPPED", DOWN: "DOWN"}
_SEVERITY_NAMES: Final = {
    monitor_types_pb2.SEVERITY_INFO: "info",
    monitor_types_pb2.SEVERITY_WARNING: "warning",
    monitor_types_pb2.SEVERITY_CRITICAL: "critical",
}
_ALERT_STATE_NAMES: Final = {
    monitor_types_pb2.ALERT_STATE_PENDING: "pending",
    monitor_types_pb2.ALERT_STATE_FIRING: "firing",
}

JsonDict = dict[str, object]


def status_snapshot(
    statuses: Sequence[InstanceStatus],
    host: monitor_types_pb2.HostFigures,
    process: Callable[[int], monitor_types_pb2.ProcessFigures | None],
    alerts: Sequence[monitor_types_pb2.Alert],
) -> JsonDict:
    """What ``/api/status`` returns: plain JSON types only, NaN replaced by None."""
    return {
        "host": _host(host),
        "services": [_service(status, process(status.record.pid)) for status in statuses],
        "alerts": [
            {
                "id": alert.id,
                "rule": alert.rule,
                "severity": _SEVERITY_NAMES.get(alert.severity, "unknown"),
                "state": _ALERT_STATE_NAMES.get(alert.state, "unknown"),
                "summary": alert.summary,
                "value": _finite(alert.value),
                "since": json_format.MessageToJson(alert.since).strip('"'),
            }
            for alert in alerts
        ],
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _host(host: monitor_types_pb2.HostFigures) -> JsonDict | None:
    if not host.HasField("sample_time"):
        return None
    cores = list(host.cpu_percent_per_core)
    total = host.memory_total_bytes
    return {
        "cores": len(cores),
        "cpu_percent": sum(cores) / len(cores) if cores else 0.0,
        "load": [host.load_1m, host.load_5m, host.load_15m],
        "memory_used_percent": 100.0 * (total - host.memory_available_bytes) / total
        if total
        else 0.0,
        "memory_total_bytes": total,
        "disk_used_percent": host.disk_used_percent,
        "net_sent_bytes_per_second": host.net_sent_bytes_per_second,
        "net_received_bytes_per_second": host.net_received_bytes_per_second,
    }


def _service(status: InstanceStatus, figures: monitor_types_pb2.ProcessFigures | None) -> JsonDict:
    record = status.record
    live = status.state == UP and figures is not None
    return {
        "service": record.service,
        "instance": record.instance,
        "state": STATE_NAMES.get(status.state, "UNKNOWN"),
        "address": record.address,
        "pid": record.pid,
        "age_s": status.age_s,
        "cpu_percent": figures.cpu_percent if live and figures else None,
        "rss_bytes": figures.rss_bytes if live and figures else None,
    }


_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }
.UP { color: #1a7f37; } .DOWN { color: #cf222e; font-weight: bold; } .STOPPED { color: #777; }
.critical { color: #cf222e; font-weight: bold; } .warning { color: #9a6700; }
#updated { color: #777; }
"""

# Rows are built with textContent only: a service name can hold any text.
_SCRIPT: Final = """
const REFRESH_MS = %(refresh_ms)d;
const $ = (id) => document.getElementById(id);
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls;
}
function fill(id, items, columns, empty) {
  const body = $(id); body.replaceChildren();
  if (!items.length) { cell(body.insertRow(), empty).colSpan = 8; return; }
  for (const item of items) {
    const row = body.insertRow();
    for (const [get, cls] of columns) cell(row, get(item), cls ? cls(item) : "");
  }
}
const pct = (v) => v === null || v === undefined ? "\\u2013" : v.toFixed(1) + " %%";
const mib = (v) => v === null || v === undefined ? "\\u2013" : (v / 1048576).toFixed(1) + " MiB";
function draw(s) {
  const h = s.host;
  $("host").textContent = h === null ? "Host not sampled yet." :
    `Host: ${h.cores} cores at ${h.cpu_percent.toFixed(0)} %% on average, load ` +
    h.load.map((v) => v.toFixed(2)).join(" / ") +
    `, memory ${h.memory_used_percent.toFixed(0)} %% used,` +
    ` disk ${h.disk_used_percent.toFixed(0)} %% used.`;
  fill("services", s.services, [
    [(x) => x.service], [(x) => x.instance], [(x) => x.state, (x) => x.state],
    [(x) => x.address || "\\u2013"], [(x) => x.pid || "\\u2013"],
    [(x) => pct(x.cpu_percent)], [(x) => mib(x.rss_bytes)],
    [(x) => x.age_s.toFixed(1) + " s ago"],
  ], "No service has reported yet.");
  fill("alerts", s.alerts, [
    [(x) => x.severity, (x) => x.severity], [(x) => x.state], [(x) => x.rule],
    [(x) => x.summary], [(x) => x.since],
  ], "No active alerts.");
  $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
}
async function refresh() {
  try {
    const response = await fetch("/api/status", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    draw(await response.json());
  } catch (err) {
    $("updated").textContent = "Monitor unreachable: " + err.message;
  }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
"""


def render_status_page(refresh_s: float) -> str:
    """The page; its script redraws from ``/api/status`` every ``refresh_s`` seconds."""
    script = _SCRIPT % {"refresh_ms": max(500, math.ceil(refresh_s * 1000))}
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>PACA monitor</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>PACA monitor</h1>
<p id="host">Loading&hellip;</p>
<noscript><p>This page needs JavaScript; the same figures are at
<a href="/api/status">/api/status</a> and <a href="/metrics">/metrics</a>.</p></noscript>
<h2>Services</h2>
<table>
<thead><tr><th>Service</th><th>Instance</th><th>State</th><th>Address</th><th>PID</th>
<th>CPU</th><th>RSS</th><th>Last report</th></tr></thead>
<tbody id="services"></tbody>
</table>
<h2>Active alerts</h2>
<table>
<thead><tr><th>Severity</th><th>State</th><th>Rule</th><th>Summary</th><th>Since</th></tr></thead>
<tbody id="alerts"></tbody>
</table>
<p><span id="updated"></span> &middot; <a href="/api/status">/api/status</a> &middot;
<a href="/metrics">/metrics</a></p>
<script>{script}</script>
</body>
</html>
"""
