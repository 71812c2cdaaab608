-- Simplified sliding sync (MSC4186) connections: per device and `conn_id`, the last two
-- positions handed out (a client may retry the previous one), and per room what the
-- connection last sent, so a restart loses no update (`sync/sliding/connection.rs`).
CREATE TABLE sliding_connections (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    pos BIGINT NOT NULL,
    typing BIGINT NOT NULL,
    prev_generation BIGINT NOT NULL,
    prev_pos BIGINT NOT NULL,
    prev_typing BIGINT NOT NULL,
    used_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id)
);
CREATE TABLE sliding_rooms (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    pos BIGINT NOT NULL,
    membership TEXT NOT NULL,
    timeline_limit BIGINT NOT NULL,
    required_state TEXT NOT NULL,
    counts TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, room_id)
);
