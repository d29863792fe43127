-- spool index, version 1.
-- One row per media version: a new ETag, Last-Modified or size gets a new
-- media_id, so chunks of different versions can never be mixed.
CREATE TABLE media (
    media_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url               TEXT    NOT NULL UNIQUE,
    size_bytes        INTEGER NOT NULL,
    chunk_size_bytes  INTEGER NOT NULL,
    content_type      TEXT,
    etag              TEXT,
    last_modified     TEXT,
    accepts_ranges    INTEGER NOT NULL,   -- 1 when the origin honours Range
    probed_unix       INTEGER NOT NULL,   -- when the validators were last checked
    last_access_unix  INTEGER NOT NULL
);

-- A row exists only for a complete chunk file that was renamed into place:
-- <cache-dir>/chunks/<media_id>/<chunk_index>.chunk
CREATE TABLE chunks (
    media_id          INTEGER NOT NULL REFERENCES media(media_id) ON DELETE CASCADE,
    chunk_index       INTEGER NOT NULL,
    size_bytes        INTEGER NOT NULL,
    crc32c            INTEGER NOT NULL,
    created_unix      INTEGER NOT NULL,
    last_access_unix  INTEGER NOT NULL,
    PRIMARY KEY (media_id, chunk_index)
) WITHOUT ROWID;

CREATE INDEX chunks_by_last_access ON chunks(last_access_unix);

-- How much of each media is cached, for people with the sqlite3 CLI.
CREATE VIEW media_summary AS
SELECT m.media_id,
       m.url,
       m.size_bytes,
       m.content_type,
       COUNT(c.chunk_index)                                        AS cached_chunks,
       (m.size_bytes + m.chunk_size_bytes - 1) / m.chunk_size_bytes AS total_chunks,
       COALESCE(SUM(c.size_bytes), 0)                              AS cached_bytes,
       ROUND(100.0 * COALESCE(SUM(c.size_bytes), 0) / MAX(m.size_bytes, 1), 1) AS cached_percent,
       datetime(m.last_access_unix, 'unixepoch')                   AS last_access_utc
FROM media m
LEFT JOIN chunks c ON c.media_id = m.media_id
GROUP BY m.media_id;
