"""api_service settings (environment or PACA_CONFIG_FILE; see README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

LISTEN: Final = "PACA_API_LISTEN"
DB_ADDRESS: Final = "PACA_DB_ADDRESS"
API_TIMEOUT: Final = "API_TIMEOUT"
CALLLOG_BATCH_SIZE: Final = "PACA_CALLLOG_BATCH_SIZE"
CALLLOG_FLUSH_INTERVAL: Final = "PACA_CALLLOG_FLUSH_INTERVAL_S"
CALLLOG_SPOOL_DIR: Final = "PACA_CALLLOG_SPOOL_DIR"
CALLLOG_MAX_DATA_BYTES: Final = "PACA_CALLLOG_MAX_DATA_BYTES"
REUSE_PORT: Final = "PACA_API_REUSE_PORT"


@dataclass(frozen=True, slots=True)
class CallLogSettings:
    """How call records travel to db_service."""

    batch_size: int = 200
    flush_interval_s: float = 0.2
    spool_dir: Path = Path("var/spool/calllog")
    # Response bodies larger than this are not copied into the record's data.
    max_data_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SettingsError(f'"{CALLLOG_BATCH_SIZE}" must be >= 1, got {self.batch_size}')
        if self.flush_interval_s <= 0:
            raise SettingsError(
                f'"{CALLLOG_FLUSH_INTERVAL}" must be > 0, got {self.flush_interval_s}'
            )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    listen: str = "127.0.0.1:50051"
    # db_service, where the call log goes; empty keeps records in the spool only.
    db_address: str = "127.0.0.1:50052"
    # Per-attempt upstream time limit when neither the call nor the endpoint sets one.
    api_timeout_s: float = 30.0
    calllog: CallLogSettings = CallLogSettings()
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if self.api_timeout_s <= 0:
            raise SettingsError(f'"{API_TIMEOUT}" must be > 0, got {self.api_timeout_s}')

    @classmethod
    def from_source(cls, source: SettingsSource, runtime: RuntimeSettings) -> ApiSettings:
        spool_default = str(Path(runtime.state_dir) / "spool" / "calllog")
        return cls(
            listen=source.address(LISTEN, "127.0.0.1:50051"),
            db_address=source.address(DB_ADDRESS, "127.0.0.1:50052", allow_empty=True),
            api_timeout_s=source.number(API_TIMEOUT, 30.0),
            calllog=CallLogSettings(
                batch_size=source.integer(CALLLOG_BATCH_SIZE, 200, minimum=1),
                flush_interval_s=source.number(CALLLOG_FLUSH_INTERVAL, 0.2),
                spool_dir=Path(source.text(CALLLOG_SPOOL_DIR, spool_default)),
                max_data_bytes=source.integer(CALLLOG_MAX_DATA_BYTES, 64 * 1024),
            ),
            reuse_port=source.flag(REUSE_PORT, False),
        )
