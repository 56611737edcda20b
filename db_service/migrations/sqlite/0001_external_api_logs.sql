-- One row per outbound call made by api_service (the seed's ExternalApiLog).
CREATE TABLE external_api_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    provider VARCHAR(50) NOT NULL,
    success BOOLEAN NOT NULL,
    is_validation_error BOOLEAN NOT NULL DEFAULT 0,
    response_time_ms REAL NOT NULL,
    data JSON,
    error_message TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    endpoint TEXT NOT NULL DEFAULT '',
    status_code INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ix_external_api_logs_provider ON external_api_logs (provider);
CREATE INDEX ix_external_api_logs_created_at ON external_api_logs (created_at);
