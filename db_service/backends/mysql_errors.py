"""MySQL and MariaDB errors: which error numbers mean what, and the db_service error of each.

The server names its errors by number (``pymysql.constants.ER``), the client its own failures
(2000-2999); a lost connection, a timeout, a duplicate key and a write in a read-only
transaction each map to the error a caller of any engine gets for them.
"""

from __future__ import annotations

import pymysql
from pymysql.constants import ER

from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    StatementTimeout,
    UniqueViolation,
    engine_error,
)

# Client-side error numbers (pymysql.constants.CR) that mean the server cannot be reached.
CONNECTION_LOST = {2003, 2006, 2013, 2055}
# MariaDB's max_statement_time (1969) and MySQL's max_execution_time (3024); 1317: interrupted.
TIMEOUT_CODES = {1969, 3024, ER.QUERY_INTERRUPTED}
DUPLICATE_CODES = {ER.DUP_ENTRY, ER.DUP_UNIQUE, ER.DUP_KEY}
# Writing in a READ ONLY transaction.
READ_ONLY_CODES = {1792}
LOST_ARGS = [(code,) for code in CONNECTION_LOST]
# The server ending the session in an error packet before it closes the socket: "Server shutdown
# in progress" and MariaDB's "Connection was killed" (a KILL the session's own statement ran, or
# one that found it between reads). The connection is gone like a lost one.
SESSION_ENDED = {ER.SERVER_SHUTDOWN, 1927}


def translate(exc: Exception) -> DbError:
    """The db_service error of a driver error, with the MySQL error number attached."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    error: DbError
    if code in TIMEOUT_CODES:
        error = StatementTimeout(f"mysql: {message}")
    elif code in DUPLICATE_CODES:
        error = UniqueViolation(message)
    elif isinstance(exc, pymysql.IntegrityError):
        error = ConstraintViolation(message)
    elif code in READ_ONLY_CODES:
        error = BadStatement("read_only", "a read-only statement tried to write")
    elif (
        code in CONNECTION_LOST
        or code in SESSION_ENDED
        or isinstance(exc, OSError | pymysql.InterfaceError)
    ):
        error = DbUnavailable(f"mysql: {message}", retry_after_s=0.1)
    elif isinstance(exc, pymysql.DataError):
        error = BadStatement("params", message)
    else:
        error = BadStatement("sql", message)
    return engine_error(error, "mysql", code)


def server_error(exc: BaseException) -> bool:
    """An error the server sent (1000-1999, 3000+) on a session it keeps, as opposed to a client
    or transport one, or the server ending the session."""
    code = exc.args[0] if isinstance(exc, pymysql.MySQLError) and exc.args else None
    return isinstance(code, int) and not 2000 <= code < 3000 and code not in SESSION_ENDED
