"""Replication positions and the consistency tokens built from them.

A token is ``<flavor>:<position>``: ``pg:16/B374D848`` (a PostgreSQL WAL LSN),
``mariadb:0-1-100,1-2-7`` (a MariaDB GTID position, one domain-server-seqno per domain),
``mysql:3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77`` (a MySQL GTID set). A host has applied a
token when its own position is at or past it: an LSN compares as a 64-bit number, a MariaDB
position per domain, a MySQL set by inclusion.

Written here rather than taken from a library: the three comparisons are a few lines each and
no maintained package offers them without a driver attached.
"""

from __future__ import annotations

from db_service.errors import BadStatement

FLAVORS = ("pg", "mariadb", "mysql")


def make_token(flavor: str, position: str) -> str:
    """The token of ``position``; empty when the position is unknown."""
    return f"{flavor}:{position}" if position else ""


def parse_token(token: str) -> tuple[str, str]:
    """``(flavor, position)`` of a token.

    Raises:
        BadStatement: naming ``consistency_token`` when the token is malformed.
    """
    flavor, sep, position = token.partition(":")
    if not sep or flavor not in FLAVORS or not position:
        raise BadStatement("consistency_token", "not a token returned by a write")
    try:
        _PARSERS[flavor](position)
    except ValueError:
        raise BadStatement("consistency_token", "not a token returned by a write") from None
    return flavor, position


def lsn(text: str) -> int:
    """A PostgreSQL LSN ("16/B374D848") as a number."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def _mariadb(text: str) -> dict[int, int]:
    """Highest seqno per replication domain of a MariaDB GTID position."""
    found: dict[int, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        domain, _server, seqno = item.split("-")
        found[int(domain)] = max(found.get(int(domain), 0), int(seqno))
    return found


def _mysql(text: str) -> dict[str, list[tuple[int, int]]]:
    """Intervals of transaction numbers per source UUID of a MySQL GTID set."""
    found: dict[str, list[tuple[int, int]]] = {}
    for item in filter(None, (p.strip() for p in text.replace("\n", "").split(","))):
        uuid, *ranges = item.split(":")
        if not ranges:
            raise ValueError(f"not a GTID set: {item!r}")
        for part in ranges:
            first, _, last = part.partition("-")
            found.setdefault(uuid.lower(), []).append((int(first), int(last or first)))
    return found


_PARSERS = {"pg": lsn, "mariadb": _mariadb, "mysql": _mysql}


def reached(flavor: str, applied: str, wanted: str) -> bool:
    """Whether a host at position ``applied`` has applied everything up to ``wanted``.

    Raises:
        BadStatement: naming ``consistency_token`` when the host's position is not of the
            token's flavor: a MySQL token sent to a MariaDB database or the reverse (both speak
            one protocol, so only the position tells them apart).
    """
    if not applied:
        return False
    try:
        return _reached(flavor, applied, wanted)
    except ValueError:
        raise BadStatement(
            "consistency_token", f"not a token of this database ({flavor})"
        ) from None


def _reached(flavor: str, applied: str, wanted: str) -> bool:
    if flavor == "pg":
        return lsn(applied) >= lsn(wanted)
    if flavor == "mariadb":
        have = _mariadb(applied)
        return all(have.get(domain, -1) >= seqno for domain, seqno in _mariadb(wanted).items())
    have_sets = _mysql(applied)
    for uuid, intervals in _mysql(wanted).items():
        for first, last in intervals:
            if not any(a <= first and last <= b for a, b in have_sets.get(uuid, [])):
                return False
    return True
