-- Login tokens (spec: `/login/get_token`, `m.login.token`): single use, short lived,
-- only their SHA-256 kept.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_by_user ON login_tokens (user_id, expires_ts);
