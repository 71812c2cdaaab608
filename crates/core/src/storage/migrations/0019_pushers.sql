-- Pushers (spec: "Push Notifications", `/pushers/set`) and what each has delivered.
-- A pusher belongs to the device whose token set it and goes with it. Delivery reads the
-- push outcomes (`push_events`, `push_exceptions`) after `pushed_upto`, so nothing is
-- queued twice: a notification is sent until the gateway takes it, with back-off
-- (`failures`, `retry_at`) that survives restarts.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The pusher's `data` as JSON (`url`, `format`, the client's own keys).
    data TEXT NOT NULL,
    -- When the pushkey was last set, in ms (`pushkey_ts` is sent in seconds).
    updated_ts BIGINT NOT NULL,
    pushed_upto BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    failing_since BIGINT,
    retry_at BIGINT,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
CREATE INDEX pushers_by_device ON pushers (user_id, device_id);
-- The `sound` tweak of the outcome (spec: "Tweaks"), sent to the gateway.
ALTER TABLE push_events ADD COLUMN sound TEXT;
ALTER TABLE push_exceptions ADD COLUMN sound TEXT;
