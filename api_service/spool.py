"""A durable on-disk FIFO of call-record batches, for when db_service cannot take them.

One file per batch, written to a temporary name, fsynced and renamed, so a crash leaves either a
whole batch or none; names sort by creation time, so draining is oldest first. Hand-written: the
need is a directory of files, and a queue library would add a format and a dependency to that.
Blocking file I/O: callers run these methods in a worker thread.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

SUFFIX = ".batch"


class Spool:
    """Batches spooled in ``directory``; safe for one writer process per directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = itertools.count()
        directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<Spool dir={self.directory} batches={len(self.pending())}>"

    def put(self, data: bytes) -> Path:
        """Store one batch durably; returns its file."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{SUFFIX}"
        final = self.directory / name
        temporary = final.with_suffix(".tmp")
        with temporary.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        temporary.rename(final)
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        return final

    def pending(self) -> list[Path]:
        """Spooled batches, oldest first."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    @staticmethod
    def read(path: Path) -> bytes:
        return path.read_bytes()

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)
