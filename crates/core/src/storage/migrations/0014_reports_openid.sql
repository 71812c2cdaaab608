-- Reports of events, rooms and users (spec: "Reporting content"), kept for the server's
-- admins; exactly one of the targets is set, `room_id` with `event_id` for an event.
CREATE TABLE reports (
    report_id TEXT PRIMARY KEY,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX reports_by_time ON reports (created_ts);

-- OpenID tokens (spec: "OpenID"): only their SHA-256, for the federation's userinfo.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_by_user ON openid_tokens (user_id, expires_ts);
