"""The monitor's status page: plain server-rendered HTML that reloads itself every interval.

No scripts and no assets, so it works from ``curl`` and in any browser; every value taken from
a report is escaped, since services choose their own names and addresses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Final

from paca.monitor.v1 import monitor_types_pb2

from monitor.registry import InstanceStatus

_STATE_NAMES: Final = {
    monitor_types_pb2.SERVICE_STATE_UP: "UP",
    monitor_types_pb2.SERVICE_STATE_STOPPED: "STOPPED",
    monitor_types_pb2.SERVICE_STATE_DOWN: "DOWN",
}

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; }
th, td { padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }
.UP { color: #1a7f37; } .DOWN { color: #cf222e; font-weight: bold; } .STOPPED { color: #777; }
"""


def render_status_page(
    statuses: Sequence[InstanceStatus],
    host: monitor_types_pb2.HostFigures,
    refresh_s: float,
) -> str:
    """The page listing every known instance, its state and the age of its last report.

    Args:
        statuses: Instances as judged now, in display order.
        host: The latest host sample (may be empty before the first one).
        refresh_s: Seconds between reloads (MONITOR_INTERVAL), rounded up to whole seconds.
    """
    rows = "\n".join(_row(status) for status in statuses) or (
        '<tr><td colspan="6">No service has reported yet.</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{max(1, math.ceil(refresh_s))}">
<title>PACA monitor</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>PACA monitor</h1>
<p>{_host_summary(host)}</p>
<table>
<thead><tr><th>Service</th><th>Instance</th><th>State</th><th>Address</th><th>PID</th>
<th>Last report</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p><a href="/metrics">/metrics</a></p>
</body>
</html>
"""


def _row(status: InstanceStatus) -> str:
    record = status.record
    state = _STATE_NAMES.get(status.state, "UNKNOWN")
    cells = (
        escape(record.service),
        escape(record.instance),
        f'<span class="{state}">{state}</span>',
        escape(record.address) or "&ndash;",
        str(record.pid) if record.pid else "&ndash;",
        f"{status.age_s:.1f} s ago",
    )
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _host_summary(host: monitor_types_pb2.HostFigures) -> str:
    if not host.HasField("sample_time"):
        return "Host not sampled yet."
    cores = host.cpu_percent_per_core
    cpu = sum(cores) / len(cores) if cores else 0.0
    gib = 1024**3
    return (
        f"Host: {len(cores)} cores at {cpu:.0f}% on average, "
        f"load {host.load_1m:.2f} / {host.load_5m:.2f} / {host.load_15m:.2f}, "
        f"memory {host.memory_available_bytes / gib:.1f} of "
        f"{host.memory_total_bytes / gib:.1f} GiB available, "
        f"disk {host.disk_used_percent:.0f}% used."
    )
