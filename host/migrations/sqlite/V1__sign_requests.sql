-- The signing service's request log (SQLite: one instance).
CREATE TABLE sign_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The client's identity (its certificate's fingerprint) and its id for the request: the
    -- idempotency key.
    client TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- SHA-256 of the normalized body without the id: the same id with another body conflicts.
    body_sha256 BLOB NOT NULL,
    -- The submission (JSON).
    body TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- pending, running, signed, refused, failed, cancelled.
    state TEXT NOT NULL,
    -- What a final request produced (JSON).
    outcome TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    -- The worker that runs it, until when, and the fencing token of its claim.
    lease_owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    -- 1 once a signing request may have reached a node: no cancel after.
    first_sent INTEGER NOT NULL DEFAULT 0,
    UNIQUE (client, request_id)
);
CREATE INDEX sign_requests_claim ON sign_requests (state, seq);
CREATE INDEX sign_requests_by_client ON sign_requests (client, seq);
