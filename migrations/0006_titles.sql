-- spool index, version 6.
-- Titles: a playlist or manifest and everything it names (variants,
-- renditions, segments, keys, initialization sections) are one title.
-- `url` is the playlist the title was first reached by (an HLS master
-- swallows the title of a variant reached before it). A file no playlist
-- names is a title of its own and has no row here unless it is pinned.
CREATE TABLE titles (
    title_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url               TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL,           -- 'hls', 'dash' or 'file'
    duration_secs     REAL,                       -- as its playlists say
    renditions        INTEGER NOT NULL DEFAULT 0, -- variants, renditions, representations
    pinned            INTEGER NOT NULL DEFAULT 0, -- 1: never evicted by size or age
    created_unix      INTEGER NOT NULL,
    last_access_unix  INTEGER NOT NULL
);

-- What a title names, one title per URL (the first to name it). `stream`
-- is the rendition a file belongs to: the HLS media playlist that names
-- it, or the DASH representation. A part is a media once a player (or a
-- prefetch) opened it: media.url = title_parts.url. Rows keep the order
-- in which they were named (rowid).
CREATE TABLE title_parts (
    url               TEXT    NOT NULL UNIQUE,
    title_id          INTEGER NOT NULL REFERENCES titles(title_id) ON DELETE CASCADE,
    role              TEXT    NOT NULL,           -- 'playlist', 'segment', 'key', 'init', 'file'
    stream            TEXT
);
CREATE INDEX title_parts_by_title ON title_parts (title_id, stream);
