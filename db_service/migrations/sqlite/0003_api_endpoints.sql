-- Endpoints registered with api_service, shared by its replicas. `spec` is the Endpoint message
-- as JSON (protobuf's JSON mapping), so fields added to the message need no migration.
CREATE TABLE api_endpoints (
    name VARCHAR(100) NOT NULL PRIMARY KEY,
    provider VARCHAR(50) NOT NULL,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX ix_api_endpoints_provider ON api_endpoints (provider);
