"""OpenTelemetry semantic-convention names, and the helpers that make their values safe.

The attribute names come from ``opentelemetry-semantic-conventions`` (stable HTTP, URL, server,
error and database attributes). The gRPC instrumentation names RPC spans itself
(``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``); this module adds
the ``server.*`` attributes it leaves out.

Values that could carry secrets pass through here first: ``url_full`` keeps credentials and
secret query values out of ``url.full``, ``sanitize_sql`` replaces every literal of a statement
with ``?`` before it becomes ``db.query.text``. No parser we depend on sanitises SQL (SQLAlchemy
compiles, it does not tokenize foreign text), so a small tokenizer lives here; it knows the
quoting of the engines db_service serves (``''`` and backslash escapes, PostgreSQL's ``E''``
and ``$tag$`` strings, MySQL's double-quoted strings) and leaves placeholders (``?``, ``$1``,
``%s``, ``:name``) alone.
"""

from __future__ import annotations

import functools
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.semconv.attributes.db_attributes import (
    DB_NAMESPACE,
    DB_OPERATION_BATCH_SIZE,
    DB_OPERATION_NAME,
    DB_QUERY_SUMMARY,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
    DbSystemNameValues,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL

from paca_runtime.redact import REDACTED, redact_url

__all__ = [
    "DB_NAMESPACE",
    "DB_OPERATION_BATCH_SIZE",
    "DB_OPERATION_NAME",
    "DB_QUERY_SUMMARY",
    "DB_QUERY_TEXT",
    "DB_RESPONSE_STATUS_CODE",
    "DB_SYSTEM_NAME",
    "ERROR_TYPE",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_RESEND_COUNT",
    "HTTP_RESPONSE_STATUS_CODE",
    "MARIADB",
    "MYSQL",
    "POSTGRESQL",
    "RPC_GRPC_STATUS_CODE",
    "RPC_METHOD",
    "RPC_SERVICE",
    "RPC_SYSTEM",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SQLITE",
    "URL_FULL",
    "grpc_target_server",
    "sanitize_sql",
    "sql_operation_name",
    "sql_query_summary",
    "url_full",
    "url_server",
]

# The names the gRPC instrumentation uses (``opentelemetry.semconv._incubating``); spelt out
# here so tests and helpers do not import a private module.
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

POSTGRESQL: Final = DbSystemNameValues.POSTGRESQL.value
MYSQL: Final = DbSystemNameValues.MYSQL.value
MARIADB: Final = DbSystemNameValues.MARIADB.value
SQLITE: Final = "sqlite"  # not in the stable value set yet; the registry's spelling

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def url_full(url: str) -> str:
    """``url`` as ``url.full`` may show it: userinfo as ``REDACTED:REDACTED``, secret query
    values (``api_key``, ``token``, ``signature``, ... see ``paca_runtime.redact``) as
    ``REDACTED``; an unparsable URL becomes ``REDACTED`` altogether."""
    url = redact_url(url)
    if url == REDACTED:
        return url
    parts = urlsplit(url)
    _, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url
    netloc = f"{REDACTED}:{REDACTED}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_server(url: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` of a URL (the scheme's port when none is given)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "", None
    return parts.hostname or "", port if port is not None else _DEFAULT_PORTS.get(parts.scheme)


def grpc_target_server(target: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` of a gRPC channel target.

    ``host:port``, ``[v6]:port``, ``dns:///host:port`` and ``ipv4:a:1,b:2`` (the first
    address) are understood; a ``unix:`` target is its path, without a port.
    """
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    else:
        if target.startswith(("unix:", "unix-abstract:")):
            return target.partition(":")[2].lstrip("/") or target, None
    first = target.split(",", 1)[0]
    host, colon, port = first.rpartition(":")
    if not colon or not port.isdigit():
        return first.strip("[]"), None
    return host.strip("[]"), int(port)


# One token of SQL per match: the literal kinds first, then anything that must be kept whole
# (identifiers, placeholders), then single characters.
_SQL_TOKEN = re.compile(
    r"""
      (?P<line_comment>--[^\n]*|\#[^\n]*)
    | (?P<block_comment>/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<string>(?:[EeBbXxNn]|_[A-Za-z0-9]+)?'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<dquoted>"(?:[^"\\]|\\.|"")*(?:"|\Z))
    | (?P<backtick>`(?:[^`]|``)*(?:`|\Z))
    | (?P<placeholder>\$\d+|%\(\w+\)s|%s|:[A-Za-z_]\w*|\?)
    | (?P<hex>0[xX][0-9A-Fa-f]+)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def sanitize_sql(sql: str, *, double_quoted_strings: bool = False) -> str:
    """``sql`` with every literal replaced by ``?``, comments dropped and spaces collapsed.

    Statements repeat (they are parameterized), so results are cached.

    Args:
        double_quoted_strings: ``"..."`` is a string (MySQL's default) rather than an
            identifier (standard SQL, PostgreSQL, SQLite).
    """
    out: list[str] = []
    for match in _SQL_TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "tag":  # pragma: no cover - a named group inside "dollar", never last
            kind = "dollar"
        if kind in ("line_comment", "block_comment", "space"):
            if out and out[-1] != " ":
                out.append(" ")
        elif kind in ("string", "dollar", "hex", "number") or (
            kind == "dquoted" and double_quoted_strings
        ):
            out.append("?")
        else:
            out.append(match.group())
    return "".join(out).strip()


_FIRST_WORD = re.compile(r"[A-Za-z]+")
_CTE_OPERATION = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
_SUMMARY_TARGET = re.compile(
    r"""^(?:
        (?P<select>SELECT)\b.*?\bFROM\s+(?P<from>[\w.$"`]+)
      | (?P<insert>INSERT|REPLACE)\s+(?:(?:OR\s+[A-Za-z]+|IGNORE)\s+)?INTO\s+(?P<into>[\w.$"`]+)
      | (?P<update>UPDATE)\s+(?P<table>[\w.$"`]+)
      | (?P<delete>DELETE)\s+FROM\s+(?P<gone>[\w.$"`]+)
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def sql_operation_name(sanitized_sql: str) -> str:
    """``db.operation.name``: the first operation of the statement, upper case (``SELECT``;
    for ``WITH ...`` the operation after the common table expressions); empty if none."""
    first = _FIRST_WORD.search(sanitized_sql)
    if first is None:
        return ""
    word = first.group().upper()
    if word == "WITH":
        # The CTE bodies are usually SELECTs; the statement's own operation comes last.
        found = _CTE_OPERATION.findall(sanitized_sql)
        return found[-1].upper() if found else word
    return word


def sql_query_summary(sanitized_sql: str) -> str:
    """``db.query.summary`` for a simple statement (``SELECT users``, ``INSERT orders``):
    its operation and first target table; empty when the statement is not that simple."""
    match = _SUMMARY_TARGET.match(sanitized_sql.lstrip("( "))
    if match is None:
        return ""
    groups = match.groupdict()
    for operation, target in (
        ("select", "from"),
        ("insert", "into"),
        ("update", "table"),
        ("delete", "gone"),
    ):
        if groups[operation]:
            return f"{groups[operation].upper()} {groups[target]}"
    return ""  # pragma: no cover - one alternative always matched
