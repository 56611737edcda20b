-- Received webhook events, stored once per (source, event_id).
CREATE TABLE webhook_events (
    pk BIGINT AUTO_INCREMENT PRIMARY KEY,
    source VARCHAR(100) NOT NULL,
    event_id VARCHAR(255) NOT NULL,
    event_type VARCHAR(200) NOT NULL DEFAULT '',
    body LONGBLOB NOT NULL,
    headers TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    traceparent VARCHAR(100) NOT NULL DEFAULT '',
    UNIQUE KEY uq_webhook_events_source_id (source, event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- Delivery state of each event per consumer group: 0 pending, 1 acked, 2 dead; a pending row
-- with lease_until in the future is leased.
CREATE TABLE webhook_deliveries (
    event_pk BIGINT NOT NULL,
    group_name VARCHAR(100) NOT NULL,
    source VARCHAR(100) NOT NULL,
    event_type VARCHAR(200) NOT NULL,
    received_ms BIGINT NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0,
    attempts INT NOT NULL DEFAULT 0,
    lease_token VARCHAR(32) NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_pk, group_name),
    KEY ix_webhook_deliveries_claim (group_name, state, event_pk),
    KEY ix_webhook_deliveries_lease (lease_token),
    CONSTRAINT fk_webhook_deliveries_event FOREIGN KEY (event_pk)
        REFERENCES webhook_events (pk) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
