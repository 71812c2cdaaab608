-- Relations between events (spec: "Forming relationships between events"): one row per
-- child event with a `rel_type`, written in the child's batch, deleted when it is redacted.
-- The parent may be unknown here (it may arrive later over federation); readers always
-- ask within one room, so a child pointing into another room is never found.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- `m.annotation` key, for refusing duplicate reactions.
    key TEXT,
    origin_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX event_relations_by_parent ON event_relations (parent_id, stream_pos);
CREATE INDEX event_relations_by_type ON event_relations (parent_id, rel_type, stream_pos);
CREATE INDEX event_relations_by_sender ON event_relations (parent_id, rel_type, sender);

-- Set on an event once a child that the server aggregates (`m.thread`, `m.replace`,
-- `m.reference`) points at it: reads bundle aggregations only for flagged events, so an
-- event without children costs nothing more to serve.
ALTER TABLE events ADD COLUMN relations BIGINT NOT NULL DEFAULT 0;

-- Threads by latest activity (`/threads`), and who took part (`include=participated`).
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    root_id TEXT NOT NULL,
    last_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, root_id)
);
CREATE INDEX threads_by_activity ON threads (room_id, last_pos);
CREATE TABLE thread_participants (
    room_id TEXT NOT NULL,
    root_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id, root_id)
);
