-- Content repository (spec: client-server API, "Content repository"). One row per media ID;
-- the file is the blob `content/{sha256}`, shared by identical uploads. A row reserved by
-- `/media/v1/create` has no `sha256` until its upload (and lapses at `expires_ts`).
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    content_type TEXT,
    filename TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT,
    quarantined BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_by_sha256 ON media (sha256);

-- Thumbnails of a content, generated once: the blob `thumbnails/{sha256}/{width}x{height}-{method}`.
CREATE TABLE media_thumbnails (
    sha256 TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (sha256, width, height, method)
);
