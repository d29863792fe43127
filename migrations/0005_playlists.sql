-- spool index, version 5.
-- Playlists and manifests that never change (HLS VOD and master
-- playlists, static DASH manifests), kept so that a cached title plays
-- with its origin unreachable, after a restart too. One row per URL asked
-- for; `final_url` is where its redirects landed (what its URIs resolve
-- against). A body is at most 4 MiB; spool keeps at most 10,000 rows
-- and 64 MiB of bodies, the least recently fetched going first.
CREATE TABLE playlists (
    url               TEXT    PRIMARY KEY,
    final_url         TEXT    NOT NULL,
    content_type      TEXT,
    body              BLOB    NOT NULL,
    fetched_unix      INTEGER NOT NULL
);
CREATE INDEX playlists_by_age ON playlists (fetched_unix);
