-- Server-side search (spec: "Server Side Search"): message bodies, room names and topics,
-- one row per event, written in the event's batch and deleted when it is redacted.
-- `simple`: no language's stemming, the same words match in every language.
CREATE TABLE event_search (
    stream_pos BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    key TEXT NOT NULL,
    vector tsvector NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
