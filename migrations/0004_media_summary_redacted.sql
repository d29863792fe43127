-- spool index, version 4.
-- media_summary shows each URL as spool's logs, API and `spool ls` do:
-- the query replaced by REDACTED (it often carries a credential, such as
-- api_key=), and the password of user:password@ left out. The media
-- table keeps the URL whole: spool needs it to ask the origin.
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
       datetime(m.last_access_unix, 'unixepoch')                   AS last_access_utc
FROM media m
JOIN shown ON shown.media_id = m.media_id
LEFT JOIN chunks c ON c.media_id = m.media_id
GROUP BY m.media_id;
