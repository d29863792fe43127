-- spool index, version 2.
-- write_id tells one write of a chunk file from another at the same
-- (media_id, chunk_index): a check that found a chunk bad repairs that
-- write's row, never a newer one cached since. Rows from version 1 get
-- random ids of their own.
ALTER TABLE chunks ADD COLUMN write_id INTEGER NOT NULL DEFAULT 0;
UPDATE chunks SET write_id = random();
