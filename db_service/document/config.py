"""Settings of the MongoDB databases of a db_service process (PACA_MONGO_DATABASES).

``PACA_MONGO_DATABASES`` holds ``name=mongodb://...`` entries separated by ``;`` (a MongoDB URL
lists replica set members with commas). The MongoDB database inside the server is the URL's path
(``mongodb://host/app`` → ``app``), else the entry's name. The URL's own options
(``maxPoolSize``, ``serverSelectionTimeoutMS``, ``connectTimeoutMS``, ``timeoutMS``) win over the
process-wide defaults below; ``read_only=true`` is ours and is taken off the URL before it
reaches the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from paca_runtime.redact import redact_url
from paca_runtime.settings import SettingsError, SettingsSource

MONGO_DATABASES: Final = "PACA_MONGO_DATABASES"
# Time limit of one operation (a whole stream for FindDocuments / AggregateDocuments) when
# neither the request nor the caller's deadline sets a smaller one.
MONGO_TIMEOUT: Final = "PACA_MONGO_TIMEOUT_S"
# How long an operation waits for a usable server before UNAVAILABLE.
MONGO_SERVER_SELECTION_TIMEOUT: Final = "PACA_MONGO_SERVER_SELECTION_TIMEOUT_S"
MONGO_CONNECT_TIMEOUT: Final = "PACA_MONGO_CONNECT_TIMEOUT_S"

SCHEMES: Final = frozenset({"mongodb", "mongodb+srv"})
# URL options (lower case) that set a field of MongoDatabaseSettings: option -> (field, scale).
_URL_OPTIONS: Final = {
    "maxpoolsize": ("pool_size", 1.0),
    "timeoutms": ("timeout_s", 0.001),
    "serverselectiontimeoutms": ("server_selection_timeout_s", 0.001),
    "connecttimeoutms": ("connect_timeout_s", 0.001),
}


@dataclass(frozen=True, slots=True)
class MongoDatabaseSettings:
    """One named MongoDB database. ``kind`` lets NoSQLConnector pick the engine."""

    name: str
    url: str
    # The database inside the MongoDB server.
    database: str
    pool_size: int = 10
    timeout_s: float = 30.0
    server_selection_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    # db_service refuses every write to it (FAILED_PRECONDITION).
    read_only: bool = False
    kind: Literal["mongodb"] = "mongodb"

    def __post_init__(self) -> None:
        where = f"MongoDB database {self.name!r}"
        if urlsplit(self.url).scheme not in SCHEMES:
            raise SettingsError(
                f"{where}: the URL must start with mongodb:// or mongodb+srv://,"
                f" got {redact_url(self.url)!r}"
            )
        if not self.database or any(c in self.database for c in '/\\. "$'):
            raise SettingsError(f'{where}: "database" is not a MongoDB database name')
        if self.pool_size < 1:
            raise SettingsError(f'{where}: "pool_size" must be >= 1, got {self.pool_size}')
        for name in ("timeout_s", "server_selection_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f'{where}: "{name}" must be > 0, got {getattr(self, name)}')

    @property
    def target(self) -> str:
        """The URL without credentials, for logs, errors and figures."""
        parts = urlsplit(self.url)
        hosts = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, hosts, parts.path, "", ""))


def mongo_database(
    name: str,
    url: str,
    *,
    pool_size: int = 10,
    timeout_s: float = 30.0,
    server_selection_timeout_s: float = 5.0,
    connect_timeout_s: float = 5.0,
    setting: str = MONGO_DATABASES,
) -> MongoDatabaseSettings:
    """A database from its URL; options in the URL override the keyword defaults."""
    where = f'"{setting}" database {name!r}'
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise SettingsError(
            f"{where}: the URL must start with mongodb:// or mongodb+srv://,"
            f" got {redact_url(url)!r}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    values: dict[str, float] = {
        "pool_size": pool_size,
        "timeout_s": timeout_s,
        "server_selection_timeout_s": server_selection_timeout_s,
        "connect_timeout_s": connect_timeout_s,
    }
    read_only = "false"
    for key, value in query:
        if key.lower() == "read_only":
            read_only = value.lower()
        elif key.lower() in _URL_OPTIONS:
            field, scale = _URL_OPTIONS[key.lower()]
            try:
                values[field] = float(value) * scale
            except ValueError:
                raise SettingsError(f"{where}: {key} must be a number, got {value!r}") from None
    if read_only not in {"true", "false", "1", "0"}:
        raise SettingsError(f"{where}: read_only must be true or false, got {read_only!r}")
    rest = urlencode([(k, v) for k, v in query if k.lower() != "read_only"])
    try:
        return MongoDatabaseSettings(
            name=name,
            url=urlunsplit(parts._replace(query=rest)),
            database=parts.path.strip("/") or name,
            pool_size=int(values["pool_size"]),
            timeout_s=values["timeout_s"],
            server_selection_timeout_s=values["server_selection_timeout_s"],
            connect_timeout_s=values["connect_timeout_s"],
            read_only=read_only in {"true", "1"},
        )
    except SettingsError as exc:
        raise SettingsError(f'"{setting}": {exc}') from None


def mongo_databases_from_source(
    source: SettingsSource, *, pool_size: int
) -> tuple[MongoDatabaseSettings, ...]:
    """The databases of PACA_MONGO_DATABASES (none when it is unset)."""
    defaults = {
        "pool_size": pool_size,
        "timeout_s": source.number(MONGO_TIMEOUT, 30.0),
        "server_selection_timeout_s": source.number(MONGO_SERVER_SELECTION_TIMEOUT, 5.0),
        "connect_timeout_s": source.number(MONGO_CONNECT_TIMEOUT, 5.0),
    }
    found: dict[str, MongoDatabaseSettings] = {}
    for item in filter(None, (p.strip() for p in source.text(MONGO_DATABASES, "").split(";"))):
        name, sep, url = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise SettingsError(
                f'"{MONGO_DATABASES}" entries are name=mongodb://..., separated by ";",'
                f" got {name + sep + redact_url(url.strip())!r}"
            )
        if name in found:
            raise SettingsError(f'"{MONGO_DATABASES}": database {name!r} appears twice')
        found[name] = mongo_database(
            name,
            url.strip(),
            pool_size=int(defaults["pool_size"]),
            timeout_s=defaults["timeout_s"],
            server_selection_timeout_s=defaults["server_selection_timeout_s"],
            connect_timeout_s=defaults["connect_timeout_s"],
        )
    return tuple(found.values())
