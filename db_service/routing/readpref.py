"""Where the current request's reads may go, set by the servicer around one statement.

A context variable rather than another ``Backend.execute`` argument: every engine backend keeps
its signature, and only :class:`~db_service.routing.replicaset.RoutedBackend` reads it. Each
gRPC call runs in its own task, so one request's preference never leaks into another's.
"""

from __future__ import annotations

import contextvars
from contextlib import AbstractContextManager
from dataclasses import dataclass

from paca.db.v1 import db_types_pb2

from db_service.routing.positions import parse_token
from paca_runtime.errors import InvalidArgument

PRIMARY = db_types_pb2.READ_PREFERENCE_PRIMARY
REPLICA_PREFERRED = db_types_pb2.READ_PREFERENCE_REPLICA_PREFERRED
ANY = db_types_pb2.READ_PREFERENCE_ANY
_UNSPECIFIED = db_types_pb2.READ_PREFERENCE_UNSPECIFIED
_KNOWN = frozenset(db_types_pb2.ReadPreference.values())


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """A read preference (``READ_PREFERENCE_*``; unspecified means replica-preferred) and a
    consistency token (empty: none)."""

    preference: int = db_types_pb2.READ_PREFERENCE_UNSPECIFIED
    token: str = ""


_DEFAULT = ReadOptions()
_BY_PREFERENCE: dict[int, ReadOptions] = {int(p): ReadOptions(p) for p in _KNOWN}
_current: contextvars.ContextVar[ReadOptions | None] = contextvars.ContextVar(
    "paca_read_options", default=None
)


def current() -> ReadOptions:
    return _current.get() or _DEFAULT


class _Scope:
    """The block of one ``read_options``: a plain context manager, cheaper per request than a
    generator-based one (every Query, Select and StreamQuery enters one)."""

    __slots__ = ("_options", "_reset")

    def __init__(self, options: ReadOptions) -> None:
        self._options = options
        self._reset: contextvars.Token[ReadOptions | None] | None = None

    def __enter__(self) -> None:
        self._reset = _current.set(self._options)

    def __exit__(self, *exc_info: object) -> None:
        if self._reset is not None:
            _current.reset(self._reset)
            self._reset = None


class _Unchanged:
    """The block of a ``read_options`` that would set what :func:`current` gives already."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNCHANGED = _Unchanged()


def read_options(preference: int = 0, token: str = "") -> AbstractContextManager[None]:
    """Route the reads inside the block by ``preference`` and ``token``.

    Enter the block at once: whether it changes anything is decided here.

    Raises:
        paca_runtime.errors.InvalidArgument: naming ``read_preference`` or
            ``consistency_token`` when either is not valid.
    """
    if preference not in _KNOWN:
        raise InvalidArgument("read_preference", f"unknown value {preference}")
    if token:
        parse_token(token)
        return _Scope(ReadOptions(preference, token))
    if preference == _UNSPECIFIED and _current.get() is None:
        # The default options outside any other block (most requests): nothing to set.
        return _UNCHANGED
    # The options are frozen: requests without a token share one object per preference.
    return _Scope(_BY_PREFERENCE[preference])
