"""The status page in a real headless Chromium: its script fetches /api/status and draws it.

Needs Debian's ``chromium`` package; the test skips without it, except under CI, where a
missing browser is a broken setup and fails the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from paca.monitor.v1 import monitor_service_pb2, monitor_types_pb2

from monitor.app import MonitorApp
from monitor.rules import AlertRule
from monitor.settings import MonitorSettings
from paca_runtime.settings import RuntimeSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed: apt-get install --no-install-recommends chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets its first fetch complete)."""
    process = await asyncio.create_subprocess_exec(
        browser,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(45):
            stdout, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    return stdout.decode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def monitor() -> AsyncIterator[MonitorApp]:
    settings = MonitorSettings(
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        sample_interval_s=60.0,
        down_after_s=120.0,
        rules=(
            AlertRule(
                name="QueueDeep",
                metric="queue_depth",
                threshold=10,
                severity=monitor_types_pb2.SEVERITY_CRITICAL,
            ),
        ),
    )
    app = MonitorApp(settings, RuntimeSettings(shutdown_grace_s=1.0), clock=FakeClock())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_page_in_chromium_shows_services_state_figures_and_firing_alerts(
    monitor: MonitorApp, tmp_path: Path
) -> None:
    browser = chromium()
    for instance, depth in (("host:1", 50.0), ("host:2", 1.0)):
        monitor.registry.record(
            monitor_service_pb2.ReportRequest(
                service="api_service",
                instance=instance,
                pid=os.getpid(),
                address="127.0.0.1:50051",
                metrics=[monitor_types_pb2.Metric(name="queue_depth", gauge=depth)],
            )
        )
    await monitor.sampler.refresh()  # samples the process and evaluates the rule

    dom = await dump_dom(browser, f"http://{monitor.http.bound_address}/", tmp_path / "profile")

    assert "Loading" not in dom  # the script replaced the placeholder
    assert "Host: " in dom
    assert dom.count('<td class="UP">UP</td>') == 2
    assert "host:1" in dom
    assert "host:2" in dom
    assert " MiB</td>" in dom  # the process figures of the reporting pid
    assert '<td class="critical">critical</td>' in dom
    assert "<td>firing</td><td>QueueDeep</td>" in dom
    assert 'instance="host:1"' in dom
    assert 'instance="host:2"' not in dom
    assert "Updated " in dom
