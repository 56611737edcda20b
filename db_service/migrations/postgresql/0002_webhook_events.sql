-- Received webhook events, stored once per (source, event_id).
CREATE TABLE webhook_events (
    pk BIGSERIAL PRIMARY KEY,
    source VARCHAR(100) NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    event_type VARCHAR(200) NOT NULL DEFAULT '',
    body BYTEA NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    received_ms BIGINT NOT NULL,
    traceparent VARCHAR(100) NOT NULL DEFAULT '',
    UNIQUE (source, event_id)
);
-- Delivery state of each event per consumer group: 0 pending, 1 acked, 2 dead; a pending row
-- with lease_until in the future is leased. Source, type and time are copied from the event so
-- a claim is one single-table UPDATE on every engine.
CREATE TABLE webhook_deliveries (
    event_pk BIGINT NOT NULL REFERENCES webhook_events (pk) ON DELETE CASCADE,
    group_name VARCHAR(100) NOT NULL,
    source VARCHAR(100) NOT NULL,
    event_type VARCHAR(200) NOT NULL,
    received_ms BIGINT NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_token VARCHAR(32) NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_pk, group_name)
);
CREATE INDEX ix_webhook_deliveries_claim ON webhook_deliveries (group_name, state, event_pk);
CREATE INDEX ix_webhook_deliveries_lease ON webhook_deliveries (lease_token);
