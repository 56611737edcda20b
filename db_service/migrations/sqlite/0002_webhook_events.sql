-- Received webhook events, stored once per (source, event_id).
CREATE TABLE webhook_events (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL DEFAULT '',
    body BLOB NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    received_ms INTEGER NOT NULL,
    traceparent TEXT NOT NULL DEFAULT '',
    UNIQUE (source, event_id)
);
-- Delivery state of each event per consumer group: 0 pending, 1 acked, 2 dead; a pending row
-- with lease_until in the future is leased.
CREATE TABLE webhook_deliveries (
    event_pk INTEGER NOT NULL REFERENCES webhook_events (pk) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_pk, group_name)
);
CREATE INDEX ix_webhook_deliveries_claim ON webhook_deliveries (group_name, state, event_pk);
CREATE INDEX ix_webhook_deliveries_lease ON webhook_deliveries (lease_token);
