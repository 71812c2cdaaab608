-- The membership of each member event in the current state, and the stream position of
-- every current state event, so room summaries (member counts, heroes: the first members
-- in stream order) are read from an index without parsing or joining events.
ALTER TABLE current_state ADD COLUMN membership TEXT;
ALTER TABLE current_state ADD COLUMN stream_pos BIGINT;
UPDATE current_state SET
    membership = CASE WHEN type = 'm.room.member' THEN (
        SELECT json_extract(e.json, '$.content.membership') FROM events e WHERE e.event_id = current_state.event_id
    ) END,
    stream_pos = (SELECT e.stream_pos FROM events e WHERE e.event_id = current_state.event_id);
CREATE INDEX current_state_members ON current_state (room_id, type, membership, stream_pos);
