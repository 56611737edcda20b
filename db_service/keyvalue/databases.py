"""The named Redis databases of a db_service process: opening, looking up, closing."""

from __future__ import annotations

from collections.abc import Iterator

from db_service.errors import UnknownDatabase
from db_service.keyvalue.settings import KeyValueSettings
from db_service.keyvalue.store import KeyValueStore
from paca_runtime.errors import InvalidArgument


class KeyValueDatabases:
    """Every configured Redis database.

    Lifecycle: ``open()`` once, ``aclose()`` (idempotent). Opening does not connect, so a Redis
    that is down does not keep the process from starting.
    """

    def __init__(self, settings: KeyValueSettings) -> None:
        self.settings = settings
        self._stores = {db.name: KeyValueStore(db, settings) for db in settings.databases}

    def __repr__(self) -> str:
        return f"<KeyValueDatabases {sorted(self._stores)}>"

    def __iter__(self) -> Iterator[KeyValueStore]:
        return iter(self._stores.values())

    def __len__(self) -> int:
        return len(self._stores)

    async def open(self) -> None:
        for store in self._stores.values():
            await store.open()

    async def aclose(self) -> None:
        for store in self._stores.values():
            await store.aclose()

    def get(self, name: str) -> KeyValueStore:
        """The database called ``name``; an empty name means the only one configured."""
        if not name:
            if len(self._stores) == 1:
                return next(iter(self._stores.values()))
            raise InvalidArgument(
                "database", f"required: one of {sorted(self._stores)} (several are configured)"
            )
        try:
            return self._stores[name]
        except KeyError:
            raise UnknownDatabase(name) from None
