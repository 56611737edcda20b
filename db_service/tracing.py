"""DB client spans: one per statement an engine runs, as the database conventions describe.

Every engine gets them without writing any: ``Backend.__init_subclass__`` hands each engine
class to ``trace_statements``, which wraps the ``execute``, ``executemany`` and ``stream`` it
defines, and ``TransactionSession.__init_subclass__`` does the same for the statements of a
transaction (``trace_transaction_statements``).

A span is a CLIENT span named after ``db.query.summary`` (``INSERT external_api_logs``) with
``db.system.name``, ``db.namespace``, ``db.operation.name``, ``db.query.text`` (every literal
replaced by ``?``: parameter values are never recorded, and neither are values a caller wrote
into the SQL), ``server.address``/``server.port`` for networked engines and, on failure,
``db.response.status_code`` (SQLSTATE, MySQL error number, SQLite result code) and
``error.type``. Error messages are not recorded: the engines quote values in them.

The drivers (asyncpg, aiomysql, aiosqlite) have no instrumentation of their own here; wrapping
at the ``Backend`` interface also sees the SQL before an engine rewrites it (MariaDB's
``SET STATEMENT ... FOR``), so ``db.query.text`` is the statement the caller sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from paca_runtime import semconv
from paca_runtime.telemetry import dropped_below

if TYPE_CHECKING:
    from db_service.backends.base import Backend, ResultSet, TransactionSession

tracer = trace.get_tracer(__name__)

# Our own attribute: the database's name in db_service (DatabaseSettings.name, "main").
PACA_DATABASE: Final = "paca.database"
# Rows a statement returned (semantic conventions, development status).
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"

# Set while a traced method runs, so an engine that calls another traced method of its own
# (or a subclass calling super()) makes one span, not two.
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("paca_db_span", default=False)

_Attributes = dict[str, str | int]
_ENGINES: WeakKeyDictionary[Backend, tuple[str, _Attributes]] = WeakKeyDictionary()
# (sanitized text, operation, summary) per (SQL, MySQL quoting): the regexes run once per
# distinct statement. Bounded: emptied when full, so SQL with inlined values cannot grow it.
_TEXTS: dict[tuple[str, bool], tuple[str, str, str]] = {}
_TEXTS_SIZE: Final = 4096


def _system(backend: Backend) -> str:
    if backend.dialect == "postgresql":
        return semconv.POSTGRESQL
    if backend.dialect == "mysql":
        # Known once the engine has asked the server its version (MysqlBackend.open).
        return semconv.MARIADB if getattr(backend, "mariadb", False) else semconv.MYSQL
    return semconv.SQLITE if backend.dialect == "sqlite" else backend.dialect


def engine_attributes(backend: Backend) -> _Attributes:
    """The attributes every span of ``backend`` carries (computed once per engine kind)."""
    system = _system(backend)
    cached = _ENGINES.get(backend)
    if cached is not None and cached[0] == system:
        return cached[1]
    parts = urlsplit(backend.url)
    attributes: _Attributes = {semconv.DB_SYSTEM_NAME: system, PACA_DATABASE: backend.name}
    if system == semconv.SQLITE:
        # The file is the database; sqlite:////abs.db names /abs.db, sqlite:///rel.db rel.db.
        if parts.path[1:]:
            attributes[semconv.DB_NAMESPACE] = parts.path[1:]
    else:
        # PostgreSQL's database defaults to the user's name, MySQL's to none.
        database = unquote(parts.path.lstrip("/")) or (
            unquote(parts.username or "") if system == semconv.POSTGRESQL else ""
        )
        if database:
            attributes[semconv.DB_NAMESPACE] = database
        if parts.hostname:
            attributes[semconv.SERVER_ADDRESS] = parts.hostname
        with contextlib.suppress(ValueError):
            attributes[semconv.SERVER_PORT] = parts.port or (
                5432 if system == semconv.POSTGRESQL else 3306
            )
    _ENGINES[backend] = (system, attributes)
    return attributes


def statement_attributes(backend: Backend, sql: str, batch_size: int | None = None) -> _Attributes:
    """All attributes of one statement's span (``batch_size``: rows of an executemany)."""
    engine = engine_attributes(backend)
    system = engine[semconv.DB_SYSTEM_NAME]
    key = (sql, system in (semconv.MYSQL, semconv.MARIADB))
    texts = _TEXTS.get(key)
    if texts is None:
        text = semconv.sanitize_sql(sql, double_quoted_strings=key[1])
        texts = (text, semconv.sql_operation_name(text), semconv.sql_query_summary(text))
        if len(_TEXTS) >= _TEXTS_SIZE:
            _TEXTS.clear()
        _TEXTS[key] = texts
    text, operation, summary = texts
    attributes = dict(engine)
    attributes[semconv.DB_QUERY_TEXT] = text
    if batch_size is not None and batch_size != 1:
        # The conventions model one parameter set as a single operation, any other count
        # (0 included) as a batch.
        attributes[semconv.DB_OPERATION_BATCH_SIZE] = batch_size
        operation = f"BATCH {operation}".strip()
        summary = f"BATCH {summary}" if summary else ""
    if operation:
        attributes[semconv.DB_OPERATION_NAME] = operation
    if summary:
        attributes[semconv.DB_QUERY_SUMMARY] = summary
    return attributes


def span_name(attributes: _Attributes) -> str:
    """``{db.query.summary}``, else ``{db.operation.name} {db.namespace}``, else the system."""
    summary = attributes.get(semconv.DB_QUERY_SUMMARY)
    if summary:
        return str(summary)
    operation = attributes.get(semconv.DB_OPERATION_NAME)
    namespace = attributes.get(semconv.DB_NAMESPACE)
    if operation and namespace:
        return f"{operation} {namespace}"
    return str(attributes[semconv.DB_SYSTEM_NAME])


def response_status_code(exc: BaseException) -> str:
    """The engine's own code for a failure: SQLSTATE (PostgreSQL), error number (MySQL,
    MariaDB), result code name (SQLite); empty when the failure did not come from the engine.
    The driver's exception is found behind the db_service error it was translated into."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; a cycle must not hang us
        if seen is None:
            break
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorname", None):
            return str(seen.sqlite_errorname)
        code = seen.args[0] if seen.args else None
        if type(seen).__module__.startswith("pymysql") and isinstance(code, int) and code:
            return str(code)
        seen = seen.__cause__ or seen.__context__
    return ""


def _start(backend: Backend, sql: str, batch_size: int | None = None) -> trace.Span:
    attributes = statement_attributes(backend, sql, batch_size)
    return tracer.start_span(span_name(attributes), kind=SpanKind.CLIENT, attributes=attributes)


def _failed(span: trace.Span, exc: Exception) -> None:
    code = response_status_code(exc)
    if code:
        span.set_attribute(semconv.DB_RESPONSE_STATUS_CODE, code)
    error_type = code or type(exc).__qualname__
    span.set_attribute(semconv.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def _untraced() -> bool:
    """No span to make: one is open already (an engine calling its own traced method), or the
    sampler drops every span under the current one (most calls at the default sampler), so
    building the statement's attributes would be wasted."""
    return _INSIDE.get() or dropped_below(trace.get_current_span())


async def _traced(span_factory: Callable[[], trace.Span], run: Callable[[], Awaitable[Any]]) -> Any:
    if _untraced():
        return await run()
    span = span_factory()
    token = _INSIDE.set(True)
    try:
        result = await run()
        rows = getattr(result, "rows", None)
        if rows is not None and span.is_recording():
            span.set_attribute(DB_RESPONSE_RETURNED_ROWS, len(rows))
        return result
    except Exception as exc:
        _failed(span, exc)
        raise
    finally:
        _INSIDE.reset(token)
        span.end()


def _wrap_execute(method: Callable[..., Awaitable[ResultSet]]) -> Callable[..., Any]:
    # Not a coroutine function itself: it hands back the engine's coroutine, or one that
    # wraps it in a span. The common case (no span) then costs no coroutine of its own, which
    # every resumption of the statement would pass through. The decision is taken when the
    # call is made, in the caller's context: the one its awaiting (or a task's copy) runs in.
    @functools.wraps(method)
    def execute(
        self: Backend, sql: str, params: Sequence[Any], *args: Any, **kwargs: Any
    ) -> Awaitable[ResultSet]:
        if _untraced():
            return method(self, sql, params, *args, **kwargs)
        traced: Awaitable[ResultSet] = _traced(
            lambda: _start(self, sql), lambda: method(self, sql, params, *args, **kwargs)
        )
        return traced

    return execute


def _wrap_executemany(method: Callable[..., Awaitable[int]]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def executemany(
        self: Backend, sql: str, rows: Sequence[Sequence[Any]], *args: Any, **kwargs: Any
    ) -> int:
        affected: int = await _traced(
            lambda: _start(self, sql, len(rows)), lambda: method(self, sql, rows, *args, **kwargs)
        )
        return affected

    return executemany


def _wrap_stream(method: Callable[..., AsyncGenerator[ResultSet, None]]) -> Callable[..., Any]:
    # The span lives as long as the cursor: from the first chunk asked for until the consumer
    # has all rows or closes the iterator. It is never made current, since an async generator
    # resumes in whichever context pulls it.
    @functools.wraps(method)
    async def stream(
        self: Backend, sql: str, params: Sequence[Any], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ResultSet]:
        span = _start(self, sql)
        returned = 0
        try:
            async with contextlib.aclosing(method(self, sql, params, *args, **kwargs)) as chunks:
                async for chunk in chunks:
                    returned += len(chunk.rows)
                    yield chunk
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            span.set_attribute(DB_RESPONSE_RETURNED_ROWS, returned)
            span.end()

    return stream


_WRAPPERS: Final[dict[str, Callable[[Any], Callable[..., Any]]]] = {
    "execute": _wrap_execute,
    "executemany": _wrap_executemany,
    "stream": _wrap_stream,
}


def _session_backend(session: TransactionSession) -> Backend:
    # Every engine's session keeps the backend it runs on (see TransactionSession).
    backend: Backend = getattr(session, "_backend")  # noqa: B009 - a name mypy cannot see
    return backend


def _wrap_session_execute(method: Callable[..., Awaitable[ResultSet]]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def execute(
        self: TransactionSession, sql: str, params: Sequence[Any], *args: Any, **kwargs: Any
    ) -> ResultSet:
        backend = _session_backend(self)
        result: ResultSet = await _traced(
            lambda: _start(backend, sql), lambda: method(self, sql, params, *args, **kwargs)
        )
        return result

    return execute


def _wrap_session_command(method: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def command(self: TransactionSession, sql: str, *args: Any, **kwargs: Any) -> None:
        backend = _session_backend(self)
        await _traced(lambda: _start(backend, sql), lambda: method(self, sql, *args, **kwargs))

    return command


_SESSION_WRAPPERS: Final[dict[str, Callable[[Any], Callable[..., Any]]]] = {
    "execute": _wrap_session_execute,
    "command": _wrap_session_command,
}


def trace_transaction_statements(cls: type[TransactionSession]) -> None:
    """Wrap the statements of an engine's transaction session (``execute``, and ``command``
    for BEGIN, SAVEPOINT, COMMIT, ...) so each is a DB span too."""
    _wrap_methods(cls, _SESSION_WRAPPERS)


def trace_statements(cls: type[Backend]) -> None:
    """Wrap the statement methods ``cls`` itself defines so each statement is a DB span."""
    _wrap_methods(cls, _WRAPPERS)


def _wrap_methods(cls: type, wrappers: dict[str, Callable[[Any], Callable[..., Any]]]) -> None:
    for name, wrap in wrappers.items():
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "__paca_traced__", False):
            wrapped = wrap(method)
            wrapped.__paca_traced__ = True  # type: ignore[attr-defined]
            setattr(cls, name, wrapped)
