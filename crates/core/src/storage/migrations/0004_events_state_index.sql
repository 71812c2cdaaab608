-- Membership history of one user in one room, for history visibility ("shared": did the
-- user join at any point after an event).
CREATE INDEX events_state ON events (room_id, type, state_key, stream_pos);
