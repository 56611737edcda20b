"""The MongoDB databases of a db_service process, by name."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from db_service.document.backend import MongoBackend
from db_service.document.config import MongoDatabaseSettings
from db_service.errors import UnknownDatabase


class DocumentDatabases:
    """Every configured MongoDB database. Lifecycle: ``open()`` once, ``aclose()``."""

    def __init__(self, settings: Sequence[MongoDatabaseSettings]) -> None:
        self._backends = {db.name: MongoBackend(db) for db in settings}

    def __repr__(self) -> str:
        return f"<DocumentDatabases {sorted(self._backends)}>"

    def __iter__(self) -> Iterator[MongoBackend]:
        return iter(self._backends.values())

    def __len__(self) -> int:
        return len(self._backends)

    async def open(self) -> None:
        try:
            for backend in self._backends.values():
                await backend.open()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()

    def get(self, name: str) -> MongoBackend:
        """The database called ``name``; empty means the only one configured (or "main")."""
        if not name and len(self._backends) == 1:
            return next(iter(self._backends.values()))
        try:
            return self._backends[name or "main"]
        except KeyError:
            raise UnknownDatabase(name) from None
