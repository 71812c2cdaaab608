-- Account locking and suspension (spec: "Account moderation"): both reversible, set by
-- server admins through `/admin/lock` and `/admin/suspend`.
ALTER TABLE users ADD COLUMN locked BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0;
