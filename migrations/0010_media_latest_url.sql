-- spool index, version 10.
-- A media known by its cache key (--cache-key-ignore-query: the URL
-- without the query parameters that are not part of its identity, such as
-- a presigned URL's signature) records the latest URL that reached it, as
-- spool shows it: its query parameters' names without their values (a
-- signature or a token is a credential) and no password. NULL for a media
-- whose URL is its own key. media_summary shows it as latest_url.
ALTER TABLE media ADD COLUMN latest_url TEXT;
DROP VIEW media_summary;
CREATE VIEW media_summary AS
WITH q AS (
    SELECT media_id,
           CASE WHEN instr(url, '?') > 0 THEN substr(url, 1, instr(url, '?')) || 'REDACTED'
                ELSE url END AS url,
           instr(url, '://') + 3 AS at
    FROM media
), a AS (
    SELECT media_id, url, at,
           substr(url, at, instr(substr(url, at) || '/', '/') - 1) AS authority
    FROM q
), shown AS (
    SELECT media_id,
           CASE WHEN instr(authority, '@') > 0
                     AND instr(substr(authority, 1, instr(authority, '@')), ':') > 0
                THEN substr(url, 1, at - 1)
                     || substr(authority, 1, instr(authority, ':') - 1)
                     || substr(authority, instr(authority, '@'))
                     || substr(url, at + length(authority))
                ELSE url END AS url
    FROM a
)
SELECT m.media_id,
       shown.url,
       m.size_bytes,
       m.content_type,
       COUNT(c.chunk_index)                                        AS cached_chunks,
       (m.size_bytes + m.chunk_size_bytes - 1) / m.chunk_size_bytes AS total_chunks,
       COALESCE(SUM(c.size_bytes), 0)                              AS cached_bytes,
       ROUND(100.0 * COALESCE(SUM(c.size_bytes), 0) / MAX(m.size_bytes, 1), 1) AS cached_percent,
       datetime(m.last_access_unix, 'unixepoch')                   AS last_access_utc,
       m.latest_url
FROM media m
JOIN shown ON shown.media_id = m.media_id
LEFT JOIN chunks c ON c.media_id = m.media_id
GROUP BY m.media_id;
