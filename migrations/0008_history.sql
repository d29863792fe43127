-- spool index, version 8.
-- A history to look at with the sqlite3 CLI: what happened (events), how
-- much was served each day (daily), and how much of each media players
-- watched. The views at the end answer the usual questions without the
-- schema: daily_traffic, top_media, recent_problems, evictions.

-- Bytes served of each media, and responses that sent them.
ALTER TABLE media ADD COLUMN served_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE media ADD COLUMN streams INTEGER NOT NULL DEFAULT 0;

-- One row per event (the same event again within a minute adds to
-- `count`). No foreign key: the history outlives the media it names, so
-- `url` keeps it as spool's logs show it (the query REDACTED). Rows older
-- than --events-retention are pruned.
CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix      INTEGER NOT NULL,
    kind         TEXT    NOT NULL,  -- eviction, cleanup, disk_level, caching_paused,
                                    -- caching_resumed, quarantine, upstream_failure,
                                    -- media_changed, started, version_change
    media_id     INTEGER,
    chunk_index  INTEGER,
    chunks       INTEGER,
    bytes        INTEGER,
    reason       TEXT,
    url          TEXT,
    count        INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX events_by_time ON events (at_unix);
CREATE INDEX events_by_kind ON events (kind, at_unix);

-- Requests and body bytes served per day (UTC), by where they came from:
-- cache (chunk files), memory (chunks kept in memory), origin (downloads
-- and passthrough). A request counts where its first byte came from.
CREATE TABLE daily (
    day       TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    requests  INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, source)
) WITHOUT ROWID;

-- What spool keeps of itself: the version that last opened the index.
CREATE TABLE spool_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- One row per day: requests and bytes from each source, and the share of
-- bytes that did not come from the origin.
CREATE VIEW daily_traffic AS
SELECT day,
       SUM(requests)                                          AS requests,
       SUM(CASE source WHEN 'cache'  THEN requests ELSE 0 END) AS requests_cache,
       SUM(CASE source WHEN 'memory' THEN requests ELSE 0 END) AS requests_memory,
       SUM(CASE source WHEN 'origin' THEN requests ELSE 0 END) AS requests_origin,
       SUM(bytes)                                             AS bytes,
       SUM(CASE source WHEN 'cache'  THEN bytes ELSE 0 END)    AS bytes_cache,
       SUM(CASE source WHEN 'memory' THEN bytes ELSE 0 END)    AS bytes_memory,
       SUM(CASE source WHEN 'origin' THEN bytes ELSE 0 END)    AS bytes_origin,
       ROUND(100.0 * SUM(CASE source WHEN 'origin' THEN 0 ELSE bytes END)
             / MAX(SUM(bytes), 1), 1)                         AS hit_percent
FROM daily
GROUP BY day
ORDER BY day DESC;

-- Most watched first: a title (all the media its playlists name) or a
-- file no playlist names, with how much of it is cached. The URL as
-- media_summary shows it (query REDACTED, no password).
CREATE VIEW top_media AS
WITH part AS (
    SELECT m.media_id, m.url, m.served_bytes, m.streams, m.size_bytes,
           m.last_access_unix, tp.title_id,
           (SELECT COALESCE(SUM(c.size_bytes), 0) FROM chunks c
             WHERE c.media_id = m.media_id) AS cached_bytes
    FROM media m
    LEFT JOIN title_parts tp ON tp.url = m.url
), grouped AS (
    SELECT title_id, MIN(url) AS url,
           SUM(served_bytes) AS watched_bytes, SUM(streams) AS streams,
           SUM(size_bytes) AS size_bytes, SUM(cached_bytes) AS cached_bytes,
           MAX(last_access_unix) AS last_access_unix, COUNT(*) AS files
    FROM part
    GROUP BY COALESCE('t' || title_id, 'm' || media_id)
    HAVING SUM(served_bytes) > 0
), named AS (
    SELECT g.*, COALESCE(t.url, g.url) AS raw_url
    FROM grouped g LEFT JOIN titles t ON t.title_id = g.title_id
), q AS (
    SELECT *,
           CASE WHEN instr(raw_url, '?') > 0
                THEN substr(raw_url, 1, instr(raw_url, '?')) || 'REDACTED'
                ELSE raw_url END AS qurl,
           instr(raw_url, '://') + 3 AS at
    FROM named
), a AS (
    SELECT *, substr(qurl, at, instr(substr(qurl, at) || '/', '/') - 1) AS authority
    FROM q
)
SELECT CASE WHEN title_id IS NOT NULL THEN 'title' ELSE 'file' END AS what,
       CASE WHEN instr(authority, '@') > 0
                 AND instr(substr(authority, 1, instr(authority, '@')), ':') > 0
            THEN substr(qurl, 1, at - 1)
                 || substr(authority, 1, instr(authority, ':') - 1)
                 || substr(authority, instr(authority, '@'))
                 || substr(qurl, at + length(authority))
            ELSE qurl END                                        AS url,
       files,
       watched_bytes,
       streams,
       size_bytes,
       ROUND(100.0 * cached_bytes / MAX(size_bytes, 1), 1)      AS cached_percent,
       datetime(last_access_unix, 'unixepoch')                  AS last_access_utc
FROM a
ORDER BY watched_bytes DESC;

-- The last problems first: upstream failures, chunks set aside, caching
-- paused, the disk at its warning or critical level.
CREATE VIEW recent_problems AS
SELECT datetime(at_unix, 'unixepoch') AS at_utc,
       kind, reason, count, url, media_id, chunk_index
FROM events
WHERE kind IN ('upstream_failure', 'quarantine', 'caching_paused', 'media_changed')
   OR (kind = 'disk_level' AND reason IN ('warning', 'critical'))
ORDER BY at_unix DESC, event_id DESC;

-- What eviction took, newest first, and why: max_cache_size, disk_space,
-- disk_space_pinned (a pinned title's chunks), max_age, admin (deleted by
-- an admin).
CREATE VIEW evictions AS
SELECT datetime(at_unix, 'unixepoch') AS at_utc,
       reason, url, chunks, bytes, media_id
FROM events
WHERE kind = 'eviction'
ORDER BY at_unix DESC, event_id DESC;
