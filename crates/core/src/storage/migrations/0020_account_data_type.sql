-- Account data by type: the start-up read of every `m.ignored_user_list`
-- (`ignored_users.rs`) looks up these rows rather than scanning the table.
CREATE INDEX account_data_type ON account_data (type, room_id);
