-- spool index, version 9.
-- Fill while watched (--fill-while-watched): the media being filled in
-- the background, by the URL the fill asks the origin with, so that a
-- fill stopped by a restart (or by the disk's level) goes on after it.
-- A row goes when its fill ends: done, cancelled by an admin, or failed.
CREATE TABLE fills (
    url TEXT PRIMARY KEY,
    since_unix INTEGER NOT NULL
);
