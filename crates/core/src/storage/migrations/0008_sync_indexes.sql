-- Each room's last stream position and that of its last "bump" event (messages and the
-- like; MSC4186's bump_stamp): an incremental sync looks only at rooms that moved.
CREATE TABLE room_activity (
    room_id TEXT PRIMARY KEY,
    last_pos BIGINT NOT NULL,
    bump_pos BIGINT NOT NULL
);
INSERT INTO room_activity (room_id, last_pos, bump_pos)
    SELECT room_id, MAX(stream_pos),
        MAX(CASE WHEN type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
            'm.call.invite', 'm.poll.start', 'm.beacon_info') THEN stream_pos ELSE 0 END)
    FROM events GROUP BY room_id;
CREATE INDEX room_activity_last ON room_activity (last_pos);
-- The sending device of a local event with a client transaction ID (`events.txn_id`), so
-- timelines show `unsigned.transaction_id` without a query per event.
ALTER TABLE events ADD COLUMN txn_device TEXT;
-- Stream reads by position.
CREATE INDEX memberships_user_pos ON memberships (user_id, stream_pos);
CREATE INDEX receipts_stream ON receipts (stream_pos);
CREATE INDEX account_data_user_pos ON account_data (user_id, stream_pos);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);
CREATE INDEX presence_pos ON presence (stream_pos);
-- Only each user's latest device-list change is kept from now on (see
-- `e2ee/device_lists.rs`); older rows go.
DELETE FROM device_list_changes WHERE stream_pos < (
    SELECT MAX(d.stream_pos) FROM device_list_changes d WHERE d.user_id = device_list_changes.user_id
);
