-- Push outcomes (spec: "Push Notifications"), written in each event's batch. Most local
-- members of a room get the same outcome for an event (those with the default rules the
-- event does not name): that is `push_events` (one row per event that notifies anyone);
-- members whose outcome differs (mentioned, custom rules, a muted room) have a row in
-- `push_exceptions`. A member's unread counts are the outcomes after their read receipts.
CREATE TABLE push_events (
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    -- `main`, or the thread root's event ID (spec: "Threaded read receipts").
    thread_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    notify BIGINT NOT NULL,
    highlight BIGINT NOT NULL,
    PRIMARY KEY (room_id, stream_pos)
);
CREATE TABLE push_exceptions (
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    notify BIGINT NOT NULL,
    highlight BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, stream_pos)
);
