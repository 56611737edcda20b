"""The event store's SQL, written once with ``?`` placeholders and rendered per dialect.

The statements differ only where engines do: the insert that skips a duplicate (INSERT OR IGNORE,
ON CONFLICT DO NOTHING, INSERT IGNORE) and the claim. A claim marks rows with a fresh lease token
in ONE ``UPDATE`` and then reads the rows carrying that token, so it is atomic on every engine
without RETURNING (MySQL has none for UPDATE): PostgreSQL picks rows with ``FOR UPDATE SKIP
LOCKED`` so concurrent claims take disjoint rows without waiting; MySQL updates with
``ORDER BY ... LIMIT`` under InnoDB row locks; SQLite has one writer.
"""

from __future__ import annotations

import itertools

PENDING, ACKED, DEAD = 0, 1, 2

_EVENT_COLUMNS = "source, event_id, event_type, body, headers, received_ms, traceparent"

_VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENT = {
    "sqlite": f"INSERT OR IGNORE INTO webhook_events ({_EVENT_COLUMNS}) {_VALUES}",
    "postgresql": (
        f"INSERT INTO webhook_events ({_EVENT_COLUMNS}) {_VALUES}"
        " ON CONFLICT (source, event_id) DO NOTHING"
    ),
    "mysql": f"INSERT IGNORE INTO webhook_events ({_EVENT_COLUMNS}) {_VALUES}",
}

# Gives a group a delivery row for every stored event it has none for (a new group starts with
# every stored event). Params: group, group.
_MATERIALIZE_BODY = (
    " INTO webhook_deliveries (event_pk, group_name, source, event_type, received_ms)"
    " SELECT e.pk, ?, e.source, e.event_type, e.received_ms FROM webhook_events e"
    " WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d"
    " WHERE d.event_pk = e.pk AND d.group_name = ?)"
)
_MATERIALIZE = {
    "sqlite": "INSERT OR IGNORE" + _MATERIALIZE_BODY,
    "postgresql": "INSERT" + _MATERIALIZE_BODY + " ON CONFLICT DO NOTHING",
    "mysql": "INSERT IGNORE" + _MATERIALIZE_BODY,
}

# Params: now_ms, group, max_attempts, now_ms.
PARK_DEAD = (
    f"UPDATE webhook_deliveries SET state = {DEAD}, lease_token = '', lease_until = ?"
    f" WHERE group_name = ? AND state = {PENDING} AND attempts >= ? AND lease_until <= ?"
)

_CLAIMABLE = f"group_name = ? AND state = {PENDING} AND lease_until <= ?{{filters}}"
_SET_LEASE = "SET lease_token = ?, lease_until = ?, attempts = attempts + 1"
# Params: token, until_ms, group, now_ms, [source], [event_type], limit.
_CLAIM = {
    "sqlite": (
        f"UPDATE webhook_deliveries {_SET_LEASE} WHERE rowid IN"
        f" (SELECT rowid FROM webhook_deliveries WHERE {_CLAIMABLE} ORDER BY event_pk LIMIT ?)"
    ),
    "postgresql": (
        f"UPDATE webhook_deliveries {_SET_LEASE} WHERE (event_pk, group_name) IN"
        f" (SELECT event_pk, group_name FROM webhook_deliveries WHERE {_CLAIMABLE}"
        " ORDER BY event_pk LIMIT ? FOR UPDATE SKIP LOCKED)"
    ),
    "mysql": f"UPDATE webhook_deliveries {_SET_LEASE} WHERE {_CLAIMABLE} ORDER BY event_pk LIMIT ?",
}

_SELECT_EVENT = (
    "SELECT e.pk, e.source, e.event_id, e.event_type, e.body, e.headers, e.received_ms,"
    " e.traceparent, d.lease_token, d.attempts"
    " FROM webhook_deliveries d JOIN webhook_events e ON e.pk = d.event_pk"
)
# Params: group, token.
SELECT_LEASED = f"{_SELECT_EVENT} WHERE d.group_name = ? AND d.lease_token = ? ORDER BY e.pk"
# Params: group, limit.
SELECT_DEAD = f"{_SELECT_EVENT} WHERE d.group_name = ? AND d.state = {DEAD} ORDER BY e.pk LIMIT ?"

# Params: group, event_pk, token.
ACK = (
    f"UPDATE webhook_deliveries SET state = {ACKED}, lease_token = ''"
    f" WHERE group_name = ? AND event_pk = ? AND lease_token = ? AND state = {PENDING}"
)
# Params: group, event_pk, token.
RELEASE = (
    "UPDATE webhook_deliveries SET lease_until = 0"
    f" WHERE group_name = ? AND event_pk = ? AND lease_token = ? AND state = {PENDING}"
)
# Params: group, since_ms, [source].
REPLAY = (
    f"UPDATE webhook_deliveries SET state = {PENDING}, attempts = 0, lease_token = '',"
    " lease_until = 0 WHERE group_name = ? AND received_ms >= ?"
)
# Params: now_ms, [group].
STATS = (
    f"SELECT group_name, SUM(CASE WHEN state = {PENDING} AND lease_until <= ? THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN state = {PENDING} THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN state = {ACKED} THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN state = {DEAD} THEN 1 ELSE 0 END)"
    " FROM webhook_deliveries{where} GROUP BY group_name ORDER BY group_name"
)
COUNT_EVENTS = "SELECT COUNT(*) FROM webhook_events"


def render(sql: str, dialect: str) -> str:
    """``sql`` with its ``?`` placeholders in the dialect's style ($1.. or %s)."""
    if dialect == "sqlite":
        return sql
    if dialect == "mysql":
        return sql.replace("?", "%s")
    numbers = itertools.count(1)
    return "".join(f"${next(numbers)}" if c == "?" else c for c in sql)


def insert_event(dialect: str) -> str:
    return render(_INSERT_EVENT[dialect], dialect)


def materialize(dialect: str) -> str:
    return render(_MATERIALIZE[dialect], dialect)


def filters(source: str, event_type: str) -> tuple[str, list[str]]:
    """Extra conditions (and their params) for the filters that are set: an empty filter adds
    nothing, so no statement compares a parameter with '' (PostgreSQL could not type it)."""
    sql, params = "", list[str]()
    if source:
        sql, params = sql + " AND source = ?", [*params, source]
    if event_type:
        sql, params = sql + " AND event_type = ?", [*params, event_type]
    return sql, params


def claim(dialect: str, conditions: str) -> str:
    return render(_CLAIM[dialect].format(filters=conditions), dialect)
