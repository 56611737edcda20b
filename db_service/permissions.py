"""Read-only databases and per-client limits, checked before a statement reaches an engine.

Token scopes (paca_runtime.auth) decide which RPCs a client may call at all; this adds what
scopes cannot say: a database db_service never writes to, and clients that may only read or may
only use the builder RPCs. The client is the ``name`` of its bearer token's entry in the tokens
file; with auth off every caller is the default client "*".

Status codes, chosen so a caller can tell whom to ask:

- PERMISSION_DENIED (:class:`ClientRefused`): this client may not do this anywhere; the message
  names the client, the RPC and the limit ("client 'reports' is read-only: Execute refused").
- FAILED_PRECONDITION (:class:`ReadOnlyDatabase`): nobody may write to this database; it is the
  database's state, not the caller's rights ("database 'archive' is read-only: Insert refused").

Reads by a read-only client or on a read-only database run in a read-only transaction, so the
engine itself refuses a statement that tries to write.
"""

from __future__ import annotations

import grpc

from db_service.settings import ClientPolicy, DbSettings
from paca_runtime.auth import PermissionDenied
from paca_runtime.errors import StatusError
from paca_runtime.security import TokenTable

# RPCs that carry SQL text as written by the client.
RAW_SQL_RPCS = frozenset({"Query", "Execute", "ExecuteBatch", "StreamQuery", "Transaction"})


class ClientRefused(PermissionDenied):
    """The calling client's policy forbids this."""


class ReadOnlyDatabase(StatusError):
    """The database is configured read-only."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def _bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""


class Permissions:
    """The checks of one process's settings; cheap when no client policy is configured."""

    def __init__(self, settings: DbSettings, tokens: TokenTable | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self._read_only_databases = frozenset(db.name for db in settings.databases if db.read_only)

    def __repr__(self) -> str:
        return (
            f"<Permissions clients={[c.name for c in self.settings.clients]} "
            f"read_only_databases={sorted(self._read_only_databases)}>"
        )

    def client(self, context: grpc.aio.ServicerContext) -> ClientPolicy | None:
        """The policy of the calling client, None when nothing limits it."""
        if not self.settings.clients:
            return None
        entry = self.tokens.lookup(_bearer(context)) if self.tokens is not None else None
        return self.settings.client(entry.name if entry is not None else None)

    def check(
        self,
        context: grpc.aio.ServicerContext,
        rpc: str,
        database: str,
        *,
        writes: bool,
    ) -> bool:
        """Refuse what the client or the database does not allow; True when reads must run
        read-only (a read-only client or database)."""
        # No client policies (the usual case): nothing to look up for this caller.
        policy = self.client(context) if self.settings.clients else None
        if policy is not None:
            if not policy.raw_sql and rpc in RAW_SQL_RPCS:
                raise ClientRefused(
                    f"client {policy.name!r} may not send SQL: {rpc} refused;"
                    " use Select, Insert, Update or Delete"
                )
            if policy.read_only and writes:
                raise ClientRefused(f"client {policy.name!r} is read-only: {rpc} refused")
        if database in self._read_only_databases:
            if writes:
                raise ReadOnlyDatabase(f"database {database!r} is read-only: {rpc} refused")
            return True
        return policy is not None and policy.read_only
