"""Settings of the monitor sidecar, read once per process from a :class:`SettingsSource`.

| name | default | meaning |
| --- | --- | --- |
| ``PACA_MONITOR_LISTEN`` | ``127.0.0.1:50053`` | gRPC address of the MonitorService |
| ``PACA_METRICS_LISTEN`` | ``127.0.0.1:9464`` | HTTP address of ``/metrics`` and status page |
| ``PACA_MONITOR_DOWN_AFTER_S`` | 3 x ``MONITOR_INTERVAL`` | silence that makes an instance DOWN |
| ``MONITOR_INTERVAL`` | ``10`` | seconds between samples (and between service reports) |
| ``PACA_MONITOR_RULES`` | built-in defaults | TOML file of alert rules (``deploy/alerts.toml``) |
| ``PACA_MONITOR_ALERT_WEBHOOK_URL`` | off | http(s) URL alert changes are POSTed to |
| ``PACA_MONITOR_API_ADDRESS`` | ``127.0.0.1:50051`` | api_service, which sends the webhook calls |

Port 0 in either address binds a free port; the process prints the real ones on its ready line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from monitor.default_rules import DEFAULT_RULES
from monitor.rules import AlertRule, RuleError, load_rules
from paca_runtime.settings import (
    MONITOR_INTERVAL,
    RuntimeSettings,
    SettingsError,
    SettingsSource,
)

LISTEN: Final = "PACA_MONITOR_LISTEN"
METRICS_LISTEN: Final = "PACA_METRICS_LISTEN"
DOWN_AFTER: Final = "PACA_MONITOR_DOWN_AFTER_S"
RULES: Final = "PACA_MONITOR_RULES"
ALERT_WEBHOOK_URL: Final = "PACA_MONITOR_ALERT_WEBHOOK_URL"
API_ADDRESS: Final = "PACA_MONITOR_API_ADDRESS"

DEFAULT_LISTEN: Final = "127.0.0.1:50053"
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9464"
DEFAULT_API_ADDRESS: Final = "127.0.0.1:50051"
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
        rules: The alert rules, evaluated after every sample.
        alert_webhook_url: Where alert changes are POSTed (through api_service); empty for
            none. Often holds a credential, so it is left out of the repr.
        api_address: ``host:port`` of the api_service that makes the webhook calls.
    """

    listen_address: str = DEFAULT_LISTEN
    metrics_address: str = DEFAULT_METRICS_LISTEN
    sample_interval_s: float = 10.0
    down_after_s: float = DOWN_AFTER_INTERVALS * 10.0
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    alert_webhook_url: str = field(default="", repr=False)
    api_address: str = DEFAULT_API_ADDRESS

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
        if self.alert_webhook_url:
            parts = urlsplit(self.alert_webhook_url)
            # The value is not echoed: a webhook URL is usually a credential.
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise SettingsError(f'"{ALERT_WEBHOOK_URL}" must be an absolute http(s) URL')

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
            rules=_rules(source.text(RULES, "")),
            alert_webhook_url=source.text(ALERT_WEBHOOK_URL, ""),
            api_address=source.address(API_ADDRESS, DEFAULT_API_ADDRESS),
        )


def _rules(path: str) -> tuple[AlertRule, ...]:
    if not path:
        return DEFAULT_RULES
    try:
        return load_rules(Path(path))
    except RuleError as exc:
        raise SettingsError(f'"{RULES}": {exc}') from exc
