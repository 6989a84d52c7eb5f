-- frostgate_submit as in V3, except for the check that no older request is pending before a
-- submit claims its request: ordered as the claim index (state, lease_until_ms, seq) is, so that
-- index answers it from its first entry. Before, the planner could answer it from the per-client
-- index by a scan of all its entries (state is not its first column), and that index holds the
-- entries of every request finished since the last vacuum: the cost of a submit grew through a
-- busy minute.
CREATE OR REPLACE FUNCTION frostgate_submit(
    p_client TEXT, p_request_id TEXT, p_hash BYTEA, p_body TEXT, p_key TEXT, p_kind TEXT,
    p_now BIGINT, p_owner TEXT, p_until BIGINT, p_ready BOOLEAN, p_claiming BOOLEAN,
    p_max_open BIGINT, p_margin BIGINT
) RETURNS TABLE (
    status TEXT, seq BIGINT, client TEXT, body TEXT, state TEXT, outcome TEXT, created_ms BIGINT,
    updated_ms BIGINT, lease_epoch BIGINT, first_sent BOOLEAN, body_sha256 BYTEA
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    open_requests BIGINT;
    claim BOOLEAN;
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(hashtextextended(p_client, 0)) THEN
        RETURN QUERY SELECT 'near_bound'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
            NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN, NULL::BYTEA;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'existing'::TEXT, r.seq, r.client, r.body, r.state, r.outcome, r.created_ms,
        r.updated_ms, r.lease_epoch, r.first_sent, r.body_sha256
        FROM sign_requests AS r WHERE r.client = p_client AND r.request_id = p_request_id;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT COUNT(*) INTO open_requests FROM sign_requests AS r
        WHERE r.client = p_client AND r.state IN ('pending', 'running');
    IF open_requests + p_margin >= p_max_open THEN
        RETURN QUERY SELECT 'near_bound'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
            NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN, NULL::BYTEA;
        RETURN;
    END IF;
    -- Claimed at acceptance only when no older request is pending. Asked of the index of open
    -- requests by state (its order, so the planner takes it): not a scan of the per-client
    -- index, whose entries of requests finished since the last vacuum it would read each time.
    claim := p_claiming AND (SELECT r.seq FROM sign_requests AS r WHERE r.state = 'pending' ORDER BY r.lease_until_ms, r.seq LIMIT 1) IS NULL;
    RETURN QUERY INSERT INTO sign_requests AS r (client, request_id, body_sha256, body, key, kind, state,
            created_ms, updated_ms, lease_owner, lease_until_ms, lease_epoch, first_sent)
        VALUES (p_client, p_request_id, p_hash, p_body, p_key, p_kind,
            CASE WHEN claim THEN 'running' ELSE 'pending' END, p_now, p_now,
            CASE WHEN claim THEN p_owner END, CASE WHEN claim THEN p_until ELSE 0 END,
            CASE WHEN claim THEN 1 ELSE 0 END, claim AND p_ready)
        ON CONFLICT (client, request_id) DO NOTHING
        RETURNING 'accepted'::TEXT, r.seq, r.client, r.body, r.state, r.outcome, r.created_ms,
            r.updated_ms, r.lease_epoch, r.first_sent, r.body_sha256;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Another submit of the same id committed first.
    RETURN QUERY SELECT 'existing'::TEXT, r.seq, r.client, r.body, r.state, r.outcome, r.created_ms,
        r.updated_ms, r.lease_epoch, r.first_sent, r.body_sha256
        FROM sign_requests AS r WHERE r.client = p_client AND r.request_id = p_request_id;
END;
$$;
