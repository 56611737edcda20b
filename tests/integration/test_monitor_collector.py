"""psutil sampling of this host and of real processes, checked against ``/proc``.

The accuracy tests read ``/proc`` themselves right beside the collector's own reads and require
the collector's figure to be within 5 % of what ``/proc`` says over the same interval: host CPU
per core, a busy child's CPU and resident memory, available memory and loopback bytes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from monitor.collector import HostCollector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TOLERANCE = 0.05
# Long enough that /proc's 10 ms tick granularity stays far below the tolerance.
MEASURED_S = 2.0
BALLAST_BYTES = 64 * 1024 * 1024

BUSY_CHILD = f"""
import sys, time
ballast = bytearray({BALLAST_BYTES})
for offset in range(0, len(ballast), 4096):
    ballast[offset] = 1  # touch every page so all of it is resident
print("ready", flush=True)
deadline = time.monotonic() + 25
while time.monotonic() < deadline:
    pass
"""

needs_proc = pytest.mark.skipif(not (PROC / "stat").exists(), reason="needs Linux /proc")


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


def close_to(figure: float, truth: float) -> bool:
    return abs(figure - truth) <= TOLERANCE * abs(truth)


def proc_cpu_ticks_per_core() -> list[tuple[int, int]]:
    """(busy, total) clock ticks of each core since boot, from /proc/stat.

    Busy is everything but idle and iowait; guest time is already inside user and nice.
    """
    cores = []
    for line in (PROC / "stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
            busy = user + nice + system + irq + softirq + steal
            cores.append((busy, busy + idle + iowait))
    return cores


def proc_process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc/<pid>/stat."""
    # The command name may hold spaces and parentheses; the fields follow its last ")".
    fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def proc_rss_bytes(pid: int) -> int:
    return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE_BYTES


def proc_meminfo_bytes(key: str) -> int:
    for line in (PROC / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0]) * 1024
    raise KeyError(key)


def proc_net_bytes() -> tuple[int, int]:
    """(received, sent) bytes of every interface, loopback included, from /proc/net/dev."""
    received = sent = 0
    for line in (PROC / "net" / "dev").read_text().splitlines()[2:]:
        fields = line.partition(":")[2].split()
        received += int(fields[0])
        sent += int(fields[8])
    return received, sent


@pytest.fixture
def busy_child() -> Iterator[int]:
    """A child process spinning on one core with 64 MiB resident; yields its pid."""
    with subprocess.Popen(
        [sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            yield child.pid
        finally:
            child.kill()


@needs_proc
def test_host_cpu_per_core_is_within_5_percent_of_proc_stat(busy_child: int) -> None:
    before = proc_cpu_ticks_per_core()
    collector = HostCollector()  # takes the CPU baseline first thing
    time.sleep(MEASURED_S)  # the measured interval: nothing to await, time has to pass
    after = proc_cpu_ticks_per_core()
    figures = collector.sample()  # reads CPU first thing

    truth = [
        100.0 * (busy1 - busy0) / (total1 - total0)
        for (busy0, total0), (busy1, total1) in zip(before, after, strict=True)
    ]
    measured = list(figures.cpu_percent_per_core)
    assert len(measured) == len(truth)
    # 5 % of a core on each core, and 5 % of the host's total.
    assert all(abs(m - t) <= 100.0 * TOLERANCE for m, t in zip(measured, truth, strict=True))
    assert close_to(sum(measured), sum(truth)), (measured, truth)
    assert sum(truth) >= 50.0  # the busy child really loaded the host


@needs_proc
def test_process_cpu_of_a_busy_loop_is_within_5_percent_of_proc(busy_child: int) -> None:
    collector = HostCollector()
    started = time.monotonic()
    cpu_before = proc_process_cpu_s(busy_child)
    assert collector.process_figures(busy_child) is not None  # the baseline
    time.sleep(MEASURED_S)  # the measured interval
    figures = collector.process_figures(busy_child)
    cpu_after = proc_process_cpu_s(busy_child)
    elapsed_s = time.monotonic() - started

    truth = 100.0 * (cpu_after - cpu_before) / elapsed_s
    assert figures is not None
    assert close_to(figures.cpu_percent, truth), (figures.cpu_percent, truth)
    assert truth >= 25.0  # the loop spun for real


@needs_proc
def test_process_rss_and_threads_match_proc(busy_child: int) -> None:
    before = proc_rss_bytes(busy_child)
    figures = HostCollector().process_figures(busy_child)
    after = proc_rss_bytes(busy_child)

    assert figures is not None
    assert close_to(figures.rss_bytes, before)
    assert close_to(figures.rss_bytes, after)
    assert figures.rss_bytes >= BALLAST_BYTES
    assert figures.threads == psutil.Process(busy_child).num_threads() == 1


@needs_proc
def test_host_memory_is_within_5_percent_of_proc_meminfo() -> None:
    available_before = proc_meminfo_bytes("MemAvailable")
    figures = HostCollector().sample()
    available_after = proc_meminfo_bytes("MemAvailable")

    assert figures.memory_total_bytes == proc_meminfo_bytes("MemTotal")
    assert close_to(figures.memory_available_bytes, available_before)
    assert close_to(figures.memory_available_bytes, available_after)
    swap_used = proc_meminfo_bytes("SwapTotal") - proc_meminfo_bytes("SwapFree")
    assert abs(figures.swap_used_bytes - swap_used) <= max(TOLERANCE * swap_used, 1 << 20)


def test_host_sample_has_a_figure_per_core_and_real_memory() -> None:
    figures = HostCollector().sample()

    assert len(figures.cpu_percent_per_core) == psutil.cpu_count()
    assert all(0.0 <= percent <= 100.0 for percent in figures.cpu_percent_per_core)
    assert figures.memory_total_bytes == psutil.virtual_memory().total
    assert 0.0 <= figures.disk_used_percent <= 100.0
    assert figures.connections >= 0
    assert figures.sample_time.seconds > 0


@needs_proc
def test_network_rate_over_loopback_is_within_5_percent_of_proc_net_dev() -> None:
    clock = FakeClock()
    collector = HostCollector(clock=clock)
    received_before, sent_before = proc_net_bytes()
    sent = 8 * 1024 * 1024

    send_over_loopback(sent)
    received_after, sent_after = proc_net_bytes()
    clock.now += 2.0
    figures = collector.sample()

    # The clock says 2 s passed, so the rate times 2 is the bytes /proc counted meanwhile.
    assert close_to(2.0 * figures.net_sent_bytes_per_second, sent_after - sent_before)
    assert close_to(2.0 * figures.net_received_bytes_per_second, received_after - received_before)
    # Other traffic on the host can only add to what this test sent.
    assert figures.net_sent_bytes_per_second >= sent / 2.0


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
