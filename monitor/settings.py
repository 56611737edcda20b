"""Settings of the monitor sidecar, read once per process from a :class:`SettingsSource`.

| name | default | meaning |
| --- | --- | --- |
| ``PACA_MONITOR_LISTEN`` | ``127.0.0.1:50053`` | gRPC address of the MonitorService |
| ``PACA_METRICS_LISTEN`` | ``127.0.0.1:9464`` | HTTP address of ``/metrics`` and status page |
| ``PACA_MONITOR_DOWN_AFTER_S`` | 3 x ``MONITOR_INTERVAL`` | silence that makes an instance DOWN |
| ``MONITOR_INTERVAL`` | ``10`` | seconds between samples (and between service reports) |

Port 0 in either address binds a free port; the process prints the real ones on its ready line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paca_runtime.settings import (
    MONITOR_INTERVAL,
    RuntimeSettings,
    SettingsError,
    SettingsSource,
)

LISTEN: Final = "PACA_MONITOR_LISTEN"
METRICS_LISTEN: Final = "PACA_METRICS_LISTEN"
DOWN_AFTER: Final = "PACA_MONITOR_DOWN_AFTER_S"

DEFAULT_LISTEN: Final = "127.0.0.1:50053"
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9464"
# Missing three reports in a row, not one late one, is what makes an instance DOWN.
DOWN_AFTER_INTERVALS: Final = 3


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """What the monitor listens on and how it judges liveness.

    Attributes:
        listen_address: ``host:port`` of the gRPC server.
        metrics_address: ``host:port`` of the HTTP server (``/metrics``, status page).
        sample_interval_s: Seconds between host and process samples; also the interval the
            monitor asks services to report at.
        down_after_s: An instance without a report for longer than this is DOWN.
    """

    listen_address: str = DEFAULT_LISTEN
    metrics_address: str = DEFAULT_METRICS_LISTEN
    sample_interval_s: float = 10.0
    down_after_s: float = DOWN_AFTER_INTERVALS * 10.0

    def __post_init__(self) -> None:
        if self.sample_interval_s <= 0:
            raise SettingsError(f'"{MONITOR_INTERVAL}" must be > 0, got {self.sample_interval_s:g}')
        # A grace shorter than one interval would flag every healthy instance DOWN between
        # two of its reports.
        if self.down_after_s <= self.sample_interval_s:
            raise SettingsError(
                f'"{DOWN_AFTER}" must be > {MONITOR_INTERVAL} ({self.sample_interval_s:g}), '
                f"got {self.down_after_s:g}"
            )

    @classmethod
    def from_source(
        cls, source: SettingsSource, runtime: RuntimeSettings | None = None
    ) -> MonitorSettings:
        """Read the monitor's settings.

        Args:
            source: Environment and config file.
            runtime: The process's shared settings, when already read; read from ``source``
                otherwise. Their ``report_interval_s`` is the sample interval.

        Raises:
            SettingsError: A value is malformed; the message names the variable.
        """
        runtime = runtime or RuntimeSettings.from_source(source)
        interval_s = runtime.report_interval_s
        return cls(
            listen_address=source.address(LISTEN, DEFAULT_LISTEN),
            metrics_address=source.address(METRICS_LISTEN, DEFAULT_METRICS_LISTEN),
            sample_interval_s=interval_s,
            down_after_s=source.number(DOWN_AFTER, DOWN_AFTER_INTERVALS * interval_s),
        )
