-- The membership of each member event in the current state, so room summaries (member
-- counts, heroes) are read without parsing events.
ALTER TABLE current_state ADD COLUMN membership TEXT;
UPDATE current_state SET membership = (
    SELECT json_extract(e.json, '$.content.membership') FROM events e WHERE e.event_id = current_state.event_id
) WHERE type = 'm.room.member';
