-- Each event's `origin_server_ts`, for `/timestamp_to_event` (an index, not a parse of
-- every event).
ALTER TABLE events ADD COLUMN origin_ts BIGINT;
UPDATE events SET origin_ts = CAST((json::jsonb ->> 'origin_server_ts') AS BIGINT);
CREATE INDEX events_room_ts ON events (room_id, origin_ts);
