-- The indexes that find open requests (claims; the per-client count and fairness) hold open
-- requests only: a request that becomes final leaves them, so they stay the size of the work in
-- flight however long the log grows. Every query they serve names its states as literals
-- ('pending', 'running'), which the planner proves imply the predicate. The indexes are rebuilt
-- under the table's lock, however long a large log takes (no statement timeout for it).
SET LOCAL statement_timeout = 0;
DROP INDEX sign_requests_claimable;
CREATE INDEX sign_requests_claimable ON sign_requests (state, lease_until_ms, seq)
    WHERE state IN ('pending', 'running');
DROP INDEX sign_requests_client_state;
CREATE INDEX sign_requests_client_state ON sign_requests (client, state, lease_until_ms)
    WHERE state IN ('pending', 'running');
