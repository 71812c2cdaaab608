-- The membership of each member event in the current state, and the stream position of
-- every current state event, so room summaries (member counts, heroes: the first members
-- in stream order) are read from an index without parsing or joining events.
ALTER TABLE current_state ADD COLUMN membership TEXT;
ALTER TABLE current_state ADD COLUMN stream_pos BIGINT;
UPDATE current_state c SET
    membership = CASE WHEN c.type = 'm.room.member' THEN e.json::json -> 'content' ->> 'membership' END,
    stream_pos = e.stream_pos
    FROM events e WHERE e.event_id = c.event_id;
CREATE INDEX current_state_members ON current_state (room_id, type, membership, stream_pos);
