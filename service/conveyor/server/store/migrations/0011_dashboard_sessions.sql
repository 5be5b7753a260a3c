-- Dashboard sign-ins: an API key exchanged for a session cookie. Like keys, only SHA-256
-- of the session's 256-bit secret is stored. Deleting the key ends its sessions; signing
-- out sets revoke_time (kept, so a replayed cookie is refused rather than unknown).
CREATE TABLE dashboard_sessions (
    id text PRIMARY KEY,
    key_id text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    revoke_time timestamptz
);

CREATE INDEX dashboard_sessions_key_id ON dashboard_sessions (key_id);
