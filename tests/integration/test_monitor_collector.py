"""psutil sampling of this host and of real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from monitor.collector import HostCollector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_over_loopback(total_bytes: int) -> None:
    """Push bytes through a real TCP connection on 127.0.0.1, read by a second thread."""
    received: list[int] = []
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        peer, _ = server.accept()

        def drain() -> None:
            with peer:
                while chunk := peer.recv(1 << 16):
                    received.append(len(chunk))

        reader = threading.Thread(target=drain)
        reader.start()
        client.sendall(b"x" * total_bytes)
        client.shutdown(socket.SHUT_WR)
        reader.join(timeout=20)
    assert sum(received) == total_bytes


def test_host_sample_has_a_figure_per_core_and_real_memory() -> None:
    figures = HostCollector().sample()

    assert len(figures.cpu_percent_per_core) == psutil.cpu_count()
    assert all(0.0 <= percent <= 100.0 for percent in figures.cpu_percent_per_core)
    assert figures.memory_total_bytes == psutil.virtual_memory().total
    assert 0.0 <= figures.disk_used_percent <= 100.0
    assert figures.connections >= 0
    assert figures.sample_time.seconds > 0


def test_network_rate_divides_bytes_sent_by_the_clock_interval() -> None:
    clock = FakeClock()
    collector = HostCollector(clock=clock)
    sent = 4 * 1024 * 1024

    send_over_loopback(sent)
    clock.now += 2.0
    figures = collector.sample()

    # Other traffic on the host can only add to what this test sent.
    assert figures.net_sent_bytes_per_second >= sent / 2.0
    assert figures.net_received_bytes_per_second >= sent / 2.0


def test_rates_are_zero_when_no_time_has_passed_on_the_clock() -> None:
    collector = HostCollector(clock=FakeClock())
    send_over_loopback(64 * 1024)

    figures = collector.sample()

    assert figures.net_sent_bytes_per_second == 0.0
    assert figures.disk_read_bytes_per_second == 0.0


def test_process_cpu_is_measured_between_two_samples_of_the_same_pid() -> None:
    collector = HostCollector()
    first = collector.process_figures(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass  # burn CPU for real, so the second sample has something to measure

    second = collector.process_figures(os.getpid())

    assert first is not None
    assert second is not None
    assert first.cpu_percent == 0.0
    assert second.cpu_percent > 10.0
    assert second.pid == os.getpid()
    assert second.rss_bytes > 0
    assert second.threads >= 1


def test_process_that_exited_has_no_figures() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=20)

    assert HostCollector().process_figures(child.pid) is None
