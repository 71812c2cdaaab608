-- Joined members of each room, kept by the write path as memberships change, so the public
-- room directory lists rooms largest first from an index.
ALTER TABLE rooms ADD COLUMN joined_members BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET joined_members = (
    SELECT COUNT(*) FROM current_state c
    WHERE c.room_id = rooms.room_id AND c.type = 'm.room.member' AND c.membership = 'join'
);
-- In the listing's order (largest first, then room ID), so a page is an index range.
CREATE INDEX rooms_directory ON rooms (is_public, joined_members DESC, room_id);
