-- The signing service's request log on PostgreSQL: the same rows as the SQLite log
-- (migrations/sqlite), shared by several service instances.
CREATE TABLE sign_requests (
    seq BIGSERIAL PRIMARY KEY,
    -- The client's identity (its certificate's fingerprint) and its id for the request: the
    -- idempotency key.
    client TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- SHA-256 of the normalized body without the id: the same id with another body conflicts.
    body_sha256 BYTEA NOT NULL,
    -- The submission (JSON).
    body TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- pending, running, signed, refused, failed, cancelled.
    state TEXT NOT NULL,
    -- What a final request produced (JSON).
    outcome TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    -- The instance's worker that runs it, until when, and the fencing token of its claim.
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    -- Once a signing request may have reached a node: no cancel after.
    first_sent BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (client, request_id)
);
-- Claims: pending requests, and running ones whose lease expired.
CREATE INDEX sign_requests_claimable ON sign_requests (state, lease_until_ms, seq);
-- Per-client counts (the bound on open requests; fairness between clients).
CREATE INDEX sign_requests_client_state ON sign_requests (client, state, lease_until_ms);
