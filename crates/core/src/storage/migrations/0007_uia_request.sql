-- A user-interactive auth session belongs to the operation it was started for.
ALTER TABLE uia_sessions ADD COLUMN request TEXT NOT NULL DEFAULT '';
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
