-- URL previews (spec: `/media/v1/preview_url`), cached by URL: the OpenGraph JSON answered.
CREATE TABLE url_previews (
    url TEXT PRIMARY KEY,
    og TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
