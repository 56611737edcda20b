"""Settings read from the environment and an optional TOML config file.

Every setting has one name, used both as the environment variable and as the key in the config
file (``PACA_CONFIG_FILE``); the environment wins. Values are validated when read and a bad one
raises :class:`SettingsError` naming the variable, so a process refuses to start rather than run
half-configured. Service packages build their own frozen settings dataclasses on top of
:class:`SettingsSource` and :class:`RuntimeSettings`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from paca_runtime.security import SecuritySettings

CONFIG_FILE: Final = "PACA_CONFIG_FILE"
LOG_LEVEL: Final = "PACA_LOG_LEVEL"
LOG_FORMAT: Final = "PACA_LOG_FORMAT"
MONITOR_ADDRESS: Final = "PACA_MONITOR_ADDRESS"
MONITOR_INTERVAL: Final = "MONITOR_INTERVAL"
SHUTDOWN_GRACE: Final = "PACA_SHUTDOWN_GRACE_S"
SHUTDOWN_DRAIN: Final = "PACA_SHUTDOWN_DRAIN_S"
STATE_DIR: Final = "PACA_STATE_DIR"
OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"

DEFAULT_MONITOR_ADDRESS: Final = "127.0.0.1:50053"
# gRPC name-resolver schemes accepted where a peer address is expected.
TARGET_SCHEMES: Final = ("dns:", "ipv4:", "ipv6:", "unix:")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class SettingsSource:
    """Reads named settings from the environment, falling back to a TOML file's top-level keys.

    Args:
        environ: The environment to read (``os.environ`` by default).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._file: dict[str, object] = {}
        path = self._environ.get(CONFIG_FILE, "").strip()
        if path:
            try:
                with Path(path).open("rb") as fh:
                    self._file = tomllib.load(fh)
            except OSError as exc:
                raise SettingsError(f'"{CONFIG_FILE}": cannot read {path}: {exc.strerror}') from exc
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f'"{CONFIG_FILE}": {path} is not valid TOML: {exc}') from exc

    def raw(self, name: str) -> str | None:
        """The setting as text, or None when neither the environment nor the file has it."""
        if name in self._environ:
            return self._environ[name]
        value = self._file.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value.strip()

    def number(self, name: str, default: float, *, minimum: float | None = 0.0) -> float:
        value = self.raw(name)
        if value is None or not value.strip():
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f'"{name}" must be a number, got {value!r}') from None
        if minimum is not None and number < minimum:
            raise SettingsError(f'"{name}" must be >= {minimum:g}, got {value!r}')
        return number

    def integer(self, name: str, default: int, *, minimum: int | None = 0) -> int:
        value = self.raw(name)
        if value is None or not value.strip():
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f'"{name}" must be an integer, got {value!r}') from None
        if minimum is not None and number < minimum:
            raise SettingsError(f'"{name}" must be >= {minimum}, got {value!r}')
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or not value.strip():
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f'"{name}" must be true or false, got {value!r}')

    def address(self, name: str, default: str, *, allow_empty: bool = False) -> str:
        """A ``host:port`` address (port 0 asks the OS for a free port), or for a peer a gRPC
        target URI such as ``ipv4:127.0.0.1:50052,127.0.0.1:50062`` or ``dns:///db:50052``
        (several replicas, balanced round-robin)."""
        value = self.text(name, default)
        if not value and allow_empty:
            return ""
        if value.startswith(TARGET_SCHEMES):
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise SettingsError(f'"{name}" must be host:port, got {value!r}')
        return value


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """What every process of the stack shares: logging, reporting, shutdown, local state."""

    log_level: str = "INFO"
    log_format: str = "json"
    monitor_address: str = DEFAULT_MONITOR_ADDRESS
    report_interval_s: float = 10.0
    shutdown_grace_s: float = 10.0
    # NOT_SERVING this long before the server stops accepting: clients that health-check move
    # away first, so no call is caught arriving at a closing server.
    shutdown_drain_s: float = 0.0
    state_dir: Path = Path("var")
    security: SecuritySettings = field(default_factory=lambda: _plaintext())

    def __post_init__(self) -> None:
        if self.log_format not in {"json", "text"}:
            raise SettingsError(f'"{LOG_FORMAT}" must be json or text, got {self.log_format!r}')
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f'"{LOG_LEVEL}" must be a logging level, got {self.log_level!r}')
        if self.report_interval_s <= 0:
            raise SettingsError(f'"{MONITOR_INTERVAL}" must be > 0, got {self.report_interval_s}')

    @classmethod
    def from_source(cls, source: SettingsSource) -> RuntimeSettings:
        return cls(
            log_level=source.text(LOG_LEVEL, "INFO").upper(),
            log_format=source.text(LOG_FORMAT, "json").lower(),
            monitor_address=source.address(
                MONITOR_ADDRESS, DEFAULT_MONITOR_ADDRESS, allow_empty=True
            ),
            report_interval_s=source.number(MONITOR_INTERVAL, 10.0),
            shutdown_grace_s=source.number(SHUTDOWN_GRACE, 10.0),
            shutdown_drain_s=source.number(SHUTDOWN_DRAIN, 0.0),
            state_dir=Path(source.text(STATE_DIR, "var")),
            security=_security(source),
        )


# security.py reads its settings through this module, so it is imported when first needed.
def _plaintext() -> SecuritySettings:
    from paca_runtime.security import SecuritySettings

    return SecuritySettings()


def _security(source: SettingsSource) -> SecuritySettings:
    from paca_runtime.security import SecuritySettings

    return SecuritySettings.from_source(source)
