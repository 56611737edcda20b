-- One row per outbound call made by api_service (the seed's ExternalApiLog).
CREATE TABLE external_api_logs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    record_id CHAR(36) NOT NULL UNIQUE,
    provider VARCHAR(50) NOT NULL,
    success BOOLEAN NOT NULL,
    is_validation_error BOOLEAN NOT NULL DEFAULT FALSE,
    response_time_ms DOUBLE NOT NULL,
    data JSON,
    error_message TEXT,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    endpoint VARCHAR(200) NOT NULL DEFAULT '',
    status_code INT NOT NULL DEFAULT 0,
    method VARCHAR(10) NOT NULL DEFAULT '',
    url TEXT NOT NULL,
    trace_id CHAR(32) NOT NULL DEFAULT '',
    attempts INT NOT NULL DEFAULT 0,
    INDEX ix_external_api_logs_provider (provider),
    INDEX ix_external_api_logs_created_at (created_at)
);
