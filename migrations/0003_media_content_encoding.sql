-- spool index, version 3.
-- The Content-Encoding an origin sent although spool asked for identity
-- (NULL: none). Cached bytes are the bytes the origin sent, so players
-- get the same header with them.
ALTER TABLE media ADD COLUMN content_encoding TEXT;
