-- The highest stream position ever handed out, where no table keeps it any more: an
-- acknowledged to-device message is deleted, and positions must never be handed out twice.
CREATE TABLE stream_floor (id BIGINT PRIMARY KEY, pos BIGINT NOT NULL);
INSERT INTO stream_floor (id, pos) VALUES (1, 0);
