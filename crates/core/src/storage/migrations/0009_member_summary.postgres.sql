-- The membership of each member event in the current state, so room summaries (member
-- counts, heroes) are read without parsing events.
ALTER TABLE current_state ADD COLUMN membership TEXT;
UPDATE current_state c SET membership = (e.json::json -> 'content' ->> 'membership')
    FROM events e WHERE e.event_id = c.event_id AND c.type = 'm.room.member';
