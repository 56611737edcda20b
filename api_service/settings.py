"""api_service settings (environment or PACA_CONFIG_FILE; see README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from api_service.safety import LOOPBACK, parse_networks
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

if TYPE_CHECKING:
    from api_service.auth.settings import AuthSettings

LISTEN: Final = "PACA_API_LISTEN"
DB_ADDRESS: Final = "PACA_DB_ADDRESS"
API_TIMEOUT: Final = "API_TIMEOUT"
CALLLOG_BATCH_SIZE: Final = "PACA_CALLLOG_BATCH_SIZE"
CALLLOG_FLUSH_INTERVAL: Final = "PACA_CALLLOG_FLUSH_INTERVAL_S"
CALLLOG_SPOOL_DIR: Final = "PACA_CALLLOG_SPOOL_DIR"
CALLLOG_MAX_DATA_BYTES: Final = "PACA_CALLLOG_MAX_DATA_BYTES"
REUSE_PORT: Final = "PACA_API_REUSE_PORT"
RETRY_MAX_ATTEMPTS: Final = "PACA_API_RETRY_MAX_ATTEMPTS"
RETRY_INITIAL_BACKOFF: Final = "PACA_API_RETRY_INITIAL_BACKOFF_S"
RETRY_MAX_BACKOFF: Final = "PACA_API_RETRY_MAX_BACKOFF_S"
RETRY_MAX_RETRY_AFTER: Final = "PACA_API_RETRY_MAX_RETRY_AFTER_S"
RETRY_BUDGET: Final = "PACA_API_RETRY_BUDGET"
RETRY_MIN_CONCURRENCY: Final = "PACA_API_RETRY_MIN_CONCURRENCY"
HOST_BREAKER_FAILURE_RATE: Final = "PACA_API_HOST_BREAKER_FAILURE_RATE"
HOST_BREAKER_MIN_CALLS: Final = "PACA_API_HOST_BREAKER_MIN_CALLS"
HOST_BREAKER_WINDOW: Final = "PACA_API_HOST_BREAKER_WINDOW_S"
HOST_BREAKER_OPEN: Final = "PACA_API_HOST_BREAKER_OPEN_S"
REDIS_URL: Final = "PACA_API_REDIS_URL"
REDIS_TIMEOUT: Final = "PACA_API_REDIS_TIMEOUT_S"
CACHE_MAX_BYTES: Final = "PACA_API_CACHE_MAX_BYTES"
ALLOWED_NETWORKS: Final = "PACA_API_ALLOWED_NETWORKS"
MAX_RESPONSE_BYTES: Final = "PACA_API_MAX_RESPONSE_BYTES"
HOST_BREAKER_SHARED: Final = "PACA_API_HOST_BREAKER_SHARED"
CACHE_REDIS_URL: Final = "PACA_API_CACHE_REDIS_URL"
CACHE_REDIS_TIMEOUT: Final = "PACA_API_CACHE_REDIS_TIMEOUT_S"
REGISTRY_DURABLE: Final = "PACA_API_REGISTRY_DURABLE"
REGISTRY_REFRESH: Final = "PACA_API_REGISTRY_REFRESH_S"
ENDPOINTS_FILE: Final = "PACA_API_ENDPOINTS_FILE"


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
class ResilienceSettings:
    """Defaults of the call engine's policies; an endpoint's own policy fields override them."""

    # Attempts in all per call (1 disables retries).
    retry_max_attempts: int = 3
    retry_initial_backoff_s: float = 0.1
    retry_max_backoff_s: float = 5.0
    # A Retry-After longer than this ends the call with the upstream's reply instead of waiting.
    retry_max_retry_after_s: float = 30.0
    # Share of in-flight calls to a host that may be retries (Envoy's retry budget).
    retry_budget: float = 0.2
    retry_min_concurrency: int = 3
    # Every upstream host has a breaker that trips on this failure rate (0 disables it).
    host_breaker_failure_rate: float = 0.5
    host_breaker_min_calls: int = 20
    host_breaker_window_s: float = 10.0
    host_breaker_open_s: float = 5.0
    # Redis holding the global rate limits (endpoints with scope GLOBAL); empty: local limits.
    redis_url: str = field(default="", repr=False)
    # Longest a global limit decision may take before the local bucket decides instead.
    redis_timeout_s: float = 0.1
    # Share host breakers' trips with every replica through redis_url (endpoint breakers say
    # so in their own policy).
    host_breaker_shared: bool = False

    def __post_init__(self) -> None:
        if self.retry_max_attempts < 1:
            raise SettingsError(
                f'"{RETRY_MAX_ATTEMPTS}" must be >= 1, got {self.retry_max_attempts}'
            )
        if self.retry_max_backoff_s < self.retry_initial_backoff_s:
            raise SettingsError(
                f'"{RETRY_MAX_BACKOFF}" must be >= {RETRY_INITIAL_BACKOFF}, '
                f"got {self.retry_max_backoff_s}"
            )
        if not 0 <= self.retry_budget <= 1:
            raise SettingsError(f'"{RETRY_BUDGET}" must be in [0, 1], got {self.retry_budget}')
        if not 0 <= self.host_breaker_failure_rate <= 1:
            raise SettingsError(
                f'"{HOST_BREAKER_FAILURE_RATE}" must be in [0, 1], '
                f"got {self.host_breaker_failure_rate}"
            )
        if self.host_breaker_min_calls < 1:
            raise SettingsError(
                f'"{HOST_BREAKER_MIN_CALLS}" must be >= 1, got {self.host_breaker_min_calls}'
            )
        for name, value in (
            (HOST_BREAKER_WINDOW, self.host_breaker_window_s),
            (HOST_BREAKER_OPEN, self.host_breaker_open_s),
        ):
            if value <= 0:
                raise SettingsError(f'"{name}" must be > 0, got {value}')
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            # The value is not echoed: it may hold a password.
            raise SettingsError(f'"{REDIS_URL}" must be a redis://, rediss:// or unix:// URL')
        if self.redis_timeout_s <= 0:
            raise SettingsError(f'"{REDIS_TIMEOUT}" must be > 0, got {self.redis_timeout_s}')

    @classmethod
    def from_source(cls, source: SettingsSource) -> ResilienceSettings:
        return cls(
            retry_max_attempts=source.integer(RETRY_MAX_ATTEMPTS, 3, minimum=1),
            retry_initial_backoff_s=source.number(RETRY_INITIAL_BACKOFF, 0.1),
            retry_max_backoff_s=source.number(RETRY_MAX_BACKOFF, 5.0),
            retry_max_retry_after_s=source.number(RETRY_MAX_RETRY_AFTER, 30.0),
            retry_budget=source.number(RETRY_BUDGET, 0.2),
            retry_min_concurrency=source.integer(RETRY_MIN_CONCURRENCY, 3),
            host_breaker_failure_rate=source.number(HOST_BREAKER_FAILURE_RATE, 0.5),
            host_breaker_min_calls=source.integer(HOST_BREAKER_MIN_CALLS, 20, minimum=1),
            host_breaker_window_s=source.number(HOST_BREAKER_WINDOW, 10.0),
            host_breaker_open_s=source.number(HOST_BREAKER_OPEN, 5.0),
            redis_url=source.text(REDIS_URL, ""),
            redis_timeout_s=source.number(REDIS_TIMEOUT, 0.1),
            host_breaker_shared=source.flag(HOST_BREAKER_SHARED, False),
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
    resilience: ResilienceSettings = ResilienceSettings()
    # Bytes of cached responses (bodies and headers) held in memory at most; 0 disables caching.
    cache_max_bytes: int = 64 * 1024 * 1024
    # Non-public networks calls may reach (comma-separated CIDRs); public addresses always may.
    # Loopback by default, so the embedded stack can call its own monitor; a deployment that
    # does not need it sets an empty value.
    allowed_networks: str = LOOPBACK
    # Longest upstream body returned; the default leaves room under gRPC's 4 MiB message limit.
    max_response_bytes: int = 4 * 1024 * 1024 - 64 * 1024
    # Key pools and OAuth2 clients (see api_service.auth.settings).
    auth: AuthSettings = field(default_factory=lambda: _auth_settings(None))
    # Redis shared by every replica's response cache; empty: memory only. While it is slow or
    # down the memory cache serves instead.
    cache_redis_url: str = field(default="", repr=False)
    cache_redis_timeout_s: float = 0.05
    # Keep the endpoint registry in db_service (when db_address is set), so restarts and
    # replicas share it; off: process memory only.
    registry_durable: bool = True
    # Period of the registry's reload from db_service (changes made by other replicas).
    registry_refresh_s: float = 5.0
    # TOML file of endpoints registered at start (see api_service.endpoints_config).
    endpoints_file: str = ""

    def __post_init__(self) -> None:
        if self.api_timeout_s <= 0:
            raise SettingsError(f'"{API_TIMEOUT}" must be > 0, got {self.api_timeout_s}')
        try:
            parse_networks(self.allowed_networks)
        except ValueError as exc:
            raise SettingsError(f'"{ALLOWED_NETWORKS}": {exc}') from None
        if self.max_response_bytes < 1:
            raise SettingsError(
                f'"{MAX_RESPONSE_BYTES}" must be >= 1, got {self.max_response_bytes}'
            )
        if self.cache_max_bytes < 0:
            raise SettingsError(f'"{CACHE_MAX_BYTES}" must be >= 0, got {self.cache_max_bytes}')
        if self.cache_redis_url and not self.cache_redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            # The value is not echoed: it may hold a password.
            raise SettingsError(f'"{CACHE_REDIS_URL}" must be a redis://, rediss:// or unix:// URL')
        for name, value in (
            (CACHE_REDIS_TIMEOUT, self.cache_redis_timeout_s),
            (REGISTRY_REFRESH, self.registry_refresh_s),
        ):
            if value <= 0:
                raise SettingsError(f'"{name}" must be > 0, got {value}')

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
            resilience=ResilienceSettings.from_source(source),
            cache_max_bytes=source.integer(CACHE_MAX_BYTES, 64 * 1024 * 1024, minimum=0),
            allowed_networks=source.text(ALLOWED_NETWORKS, LOOPBACK),
            max_response_bytes=source.integer(
                MAX_RESPONSE_BYTES, 4 * 1024 * 1024 - 64 * 1024, minimum=1
            ),
            auth=_auth_settings(source),
            cache_redis_url=source.text(CACHE_REDIS_URL, ""),
            cache_redis_timeout_s=source.number(CACHE_REDIS_TIMEOUT, 0.05),
            registry_durable=source.flag(REGISTRY_DURABLE, True),
            registry_refresh_s=source.number(REGISTRY_REFRESH, 5.0),
            endpoints_file=source.text(ENDPOINTS_FILE, ""),
        )


# The auth package imports the call engine's modules, which import these settings: it is
# imported when first needed (as paca_runtime.settings does for security).
def _auth_settings(source: SettingsSource | None) -> AuthSettings:
    from api_service.auth.settings import AuthSettings

    return AuthSettings() if source is None else AuthSettings.from_source(source)
