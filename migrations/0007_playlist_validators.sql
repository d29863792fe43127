-- spool index, version 7.
-- A kept playlist's validators (ETag, Last-Modified), as its origin sent
-- them: spool asks again conditionally (If-None-Match, If-Modified-Since)
-- and a 304 answers from the kept copy, so a warm replay after a restart
-- costs the origin no playlist bytes; a changed one is taken anew.
ALTER TABLE playlists ADD COLUMN etag TEXT;
ALTER TABLE playlists ADD COLUMN last_modified TEXT;
