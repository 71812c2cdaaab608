-- Server-side key backups (spec: "Server-side key backups").

-- One row per backup version a user created. Versions are numbered per user and never
-- reused: a deleted version keeps its row (`deleted` = 1) so a client still writing to it
-- cannot land in a newer backup. The current version is the highest one not deleted.
-- `etag` counts changes to the version's keys.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- One key per (version, room, session). `write_token` is the random token of the request
-- that last wrote (or is deleting) the row: it tells, inside the same transaction, whether
-- the request changed anything and so whether the version's etag moves.
CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data TEXT NOT NULL,
    write_token TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

CREATE INDEX backup_keys_write_token ON backup_keys (write_token);
