-- A client's open requests (the bound on submit) and running ones (the claim's fairness) are
-- counted by (client, state), not by scanning every request the client ever made.
CREATE INDEX sign_requests_client_state ON sign_requests (client, state, lease_until_ms);
