//! The SQLite index of media and cached chunks.
//!
//! SQLite calls block, so the connection lives on a thread of its own and
//! async code talks to it through a channel of closures (the shape of
//! tokio-rusqlite). One connection serialises all writes, which is what
//! SQLite wants anyway; WAL mode lets the `sqlite3` CLI read concurrently.

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::disk::WriteClass;

/// Schema migrations, applied in order; `PRAGMA user_version` records the
/// last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_chunk_write_id.sql"),
    include_str!("../../migrations/0003_media_content_encoding.sql"),
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("index schema version {found} is newer than this spool understands ({known})")]
    FromTheFuture { found: i64, known: i64 },
    #[error("index failed its integrity check: {0}")]
    Corrupt(String),
    #[error("index thread has stopped")]
    Closed,
    /// A failure injected by tests (see `Store::inject`).
    #[error("index write: {0}")]
    Injected(std::io::Error),
}

/// The index's id of one media version (`media.media_id`); its chunk
/// files live in `chunks/<media_id>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(pub i64);

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl rusqlite::ToSql for MediaId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for MediaId {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(v).map(MediaId)
    }
}

/// What the index knows of one media version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// None until the index recorded it (or when it could not).
    pub media_id: Option<MediaId>,
    pub url: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub content_type: Option<String>,
    /// The Content-Encoding the origin sent anyway, if any.
    pub content_encoding: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub accepts_ranges: bool,
    /// When the origin last confirmed the validators.
    pub probed_unix: i64,
}

#[cfg(test)]
impl MediaRow {
    /// A media version for unit tests: ranges accepted, no validators.
    pub fn for_test(media_id: i64, url: &str, size_bytes: u64, chunk_size_bytes: u64) -> MediaRow {
        MediaRow {
            media_id: Some(MediaId(media_id)),
            url: url.into(),
            size_bytes,
            chunk_size_bytes,
            content_type: None,
            content_encoding: None,
            etag: None,
            last_modified: None,
            accepts_ranges: true,
            probed_unix: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRow {
    pub chunk_index: u64,
    pub size_bytes: u64,
    pub crc32c: u32,
    /// Tells this write of the chunk from any other (random).
    pub write_id: i64,
}

impl ChunkRow {
    /// The row of a chunk file just written.
    pub fn new(chunk_index: u64, size_bytes: u64, crc32c: u32) -> ChunkRow {
        ChunkRow {
            chunk_index,
            size_bytes,
            crc32c,
            write_id: rand::random(),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Cheap to clone handle to the index thread.
#[derive(Clone)]
pub(crate) struct Index {
    tx: std_mpsc::Sender<Job>,
}

impl Index {
    /// Opens (creating if needed) the index at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        // A symlink in the index's place is refused, not followed.
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(IndexError::Corrupt(check));
        }
        Ok(Index::start(conn))
    }

    /// An index in memory, for a run whose cache directory is unusable.
    pub fn open_in_memory() -> Result<Index, IndexError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Index::start(conn))
    }

    fn start(mut conn: Connection) -> Index {
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("spool-index".into())
            .spawn(move || {
                for job in rx {
                    job(&mut conn);
                }
            })
            .expect("spawn index thread");
        Index { tx }
    }

    /// Runs `f` on the index thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, IndexError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| IndexError::Closed)?;
        Ok(rx.await.map_err(|_| IndexError::Closed)??)
    }

    pub async fn media(&self, url: &str) -> Result<Option<MediaRow>, IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT media_id, url, size_bytes, chunk_size_bytes, content_type, etag,
                        last_modified, accepts_ranges, probed_unix, content_encoding
                 FROM media WHERE url = ?1",
                [url],
                |r| {
                    Ok(MediaRow {
                        media_id: Some(r.get(0)?),
                        url: r.get(1)?,
                        size_bytes: r.get::<_, i64>(2)? as u64,
                        chunk_size_bytes: r.get::<_, i64>(3)? as u64,
                        content_type: r.get(4)?,
                        etag: r.get(5)?,
                        last_modified: r.get(6)?,
                        accepts_ranges: r.get(7)?,
                        probed_unix: r.get(8)?,
                        content_encoding: r.get(9)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records a new media version for `row.url`, replacing any older
    /// version (its chunk rows go with it). Returns the new media_id and the
    /// id of the version it replaced, whose files the caller removes.
    pub async fn replace_media(
        &self,
        row: MediaRow,
    ) -> Result<(MediaId, Option<MediaId>), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            let tx = c.transaction()?;
            let old: Option<MediaId> = tx
                .query_row(
                    "SELECT media_id FROM media WHERE url = ?1",
                    [&row.url],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute("DELETE FROM media WHERE url = ?1", [&row.url])?;
            tx.execute(
                "INSERT INTO media (url, size_bytes, chunk_size_bytes, content_type, etag,
                    last_modified, accepts_ranges, probed_unix, last_access_unix,
                    content_encoding)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![
                    row.url,
                    row.size_bytes as i64,
                    row.chunk_size_bytes as i64,
                    row.content_type,
                    row.etag,
                    row.last_modified,
                    row.accepts_ranges,
                    now,
                    row.content_encoding
                ],
            )?;
            let id = MediaId(tx.last_insert_rowid());
            tx.commit()?;
            Ok((id, old))
        })
        .await
    }

    /// Records that the origin confirmed a media version's validators now.
    pub async fn set_probed(&self, media_id: MediaId, unix: i64) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute(
                "UPDATE media SET probed_unix = ?2 WHERE media_id = ?1",
                params![media_id, unix],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a media version and its chunk rows.
    pub async fn remove_media(&self, media_id: MediaId) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute("DELETE FROM media WHERE media_id = ?1", [media_id])
                .map(drop)
        })
        .await
    }

    pub async fn chunks(&self, media_id: MediaId) -> Result<Vec<ChunkRow>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT chunk_index, size_bytes, crc32c, write_id FROM chunks WHERE media_id = ?1",
            )?;
            let rows = st.query_map([media_id], |r| {
                Ok(ChunkRow {
                    chunk_index: r.get::<_, i64>(0)? as u64,
                    size_bytes: r.get::<_, i64>(1)? as u64,
                    crc32c: r.get::<_, i64>(2)? as u32,
                    write_id: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records a chunk whose file is complete and renamed into place.
    /// Fails (foreign key) when the media version was replaced meanwhile.
    pub async fn insert_chunk(&self, media_id: MediaId, chunk: ChunkRow) -> Result<(), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            c.prepare_cached(
                "INSERT OR REPLACE INTO chunks
                    (media_id, chunk_index, size_bytes, crc32c, created_unix, last_access_unix,
                     write_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            )?
            .execute(params![
                media_id,
                chunk.chunk_index as i64,
                chunk.size_bytes as i64,
                i64::from(chunk.crc32c),
                now,
                chunk.write_id
            ])
            .map(drop)
        })
        .await
    }

    pub async fn remove_chunk(
        &self,
        media_id: MediaId,
        chunk_index: u64,
    ) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2",
                params![media_id, chunk_index as i64],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a chunk row if it still is the write `write_id`; returns
    /// whether it was.
    pub async fn remove_chunk_write(
        &self,
        media_id: MediaId,
        chunk_index: u64,
        write_id: i64,
    ) -> Result<bool, IndexError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2 AND write_id = ?3",
                params![media_id, chunk_index as i64, write_id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Removes media rows with no chunk left that nobody read since
    /// `before_unix`, except those in `open` (in use in this process), so
    /// the index stays proportional to what is cached. Returns how many.
    pub async fn forget_media(
        &self,
        before_unix: i64,
        open: Vec<MediaId>,
    ) -> Result<usize, IndexError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ids: Vec<MediaId> = {
                let mut st = tx.prepare_cached(
                    "SELECT media_id FROM media m
                     WHERE last_access_unix < ?1
                       AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.media_id = m.media_id)",
                )?;
                let rows = st.query_map([before_unix], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut n = 0;
            for id in ids.into_iter().filter(|id| !open.contains(id)) {
                n += tx.execute("DELETE FROM media WHERE media_id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Up to `limit` ids of media that have chunk rows, ascending, after
    /// `after`: a scan walks the index a batch at a time.
    pub async fn media_with_chunks(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<MediaId>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT media_id FROM chunks WHERE media_id > ?1
                 ORDER BY media_id LIMIT ?2",
            )?;
            let ids = st.query_map(rusqlite::params![after, limit], |r| r.get(0))?;
            ids.collect()
        })
        .await
    }

    /// One media's chunk rows, with when each was created.
    pub async fn chunk_rows(&self, media_id: MediaId) -> Result<Vec<(ChunkRow, i64)>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT chunk_index, size_bytes, crc32c, created_unix, write_id
                 FROM chunks WHERE media_id = ?1",
            )?;
            let rows = st.query_map([media_id], |r| {
                Ok((
                    ChunkRow {
                        chunk_index: r.get::<_, i64>(0)? as u64,
                        size_bytes: r.get::<_, i64>(1)? as u64,
                        crc32c: r.get::<_, i64>(2)? as u32,
                        write_id: r.get(4)?,
                    },
                    r.get(3)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Media count, chunk count and cached bytes.
    pub async fn totals(&self) -> Result<(u64, u64, u64), IndexError> {
        self.call(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM media), COUNT(*), COALESCE(SUM(size_bytes), 0)
                 FROM chunks",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
        })
        .await
    }

    /// Chunk rows, least recently read first: (media_id, chunk, size).
    pub async fn oldest_chunks(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<(MediaId, u64, u64)>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT media_id, chunk_index, size_bytes FROM chunks
                 ORDER BY last_access_unix, media_id, chunk_index LIMIT ?1 OFFSET ?2",
            )?;
            let rows = st.query_map(params![limit, offset], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Removes many chunk rows in one transaction.
    pub async fn remove_chunks(&self, chunks: Vec<(MediaId, u64)>) -> Result<(), IndexError> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2",
                )?;
                for (m, i) in chunks {
                    st.execute(params![m, i as i64])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// Records that a media (and the given chunks) were read now.
    pub async fn touch(&self, media_id: MediaId, chunks: Vec<u64>) -> Result<(), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE media SET last_access_unix = ?2 WHERE media_id = ?1",
                params![media_id, now],
            )?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE chunks SET last_access_unix = ?3
                     WHERE media_id = ?1 AND chunk_index = ?2",
                )?;
                for idx in chunks {
                    st.execute(params![media_id, idx as i64, now])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    // WAL: readers (the sqlite3 CLI among them) never block the writer.
    // synchronous=NORMAL is durable across process crashes in WAL mode;
    // a power cut may lose the last commits, never corrupt the file.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), IndexError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::FromTheFuture {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The class of a failed index write, as for chunk files: the index lives
/// on the same disk and fails for the same reasons.
pub(crate) fn write_class(e: &IndexError) -> WriteClass {
    use rusqlite::ErrorCode;
    match e {
        IndexError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => match f.code {
            ErrorCode::DiskFull => WriteClass::DiskFull,
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
                WriteClass::PermissionDenied
            }
            _ => WriteClass::Io,
        },
        IndexError::Injected(e) => WriteClass::classify(e),
        _ => WriteClass::Io,
    }
}

/// Whether an index write failed on a foreign key: its media version is
/// no longer in the index.
pub(crate) fn is_foreign_key(e: &IndexError) -> bool {
    matches!(
        e,
        IndexError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(url: &str) -> MediaRow {
        MediaRow {
            content_type: Some("video/mp4".into()),
            etag: Some("\"a\"".into()),
            ..MediaRow::for_test(0, url, 10, 4)
        }
    }

    #[tokio::test]
    async fn media_versions_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.db")).unwrap();
        let (id1, old) = index.replace_media(row("http://a/x")).await.unwrap();
        assert_eq!(old, None);
        let got = index.media("http://a/x").await.unwrap().unwrap();
        assert_eq!(got.media_id, Some(id1));
        assert_eq!(got.size_bytes, 10);
        let chunk = ChunkRow::new(2, 2, u32::MAX);
        index.insert_chunk(id1, chunk).await.unwrap();
        assert_eq!(index.chunks(id1).await.unwrap(), vec![chunk]);
        index.touch(id1, vec![2]).await.unwrap();

        // A new version gets a new id and takes the old chunk rows away.
        let (id2, old) = index.replace_media(row("http://a/x")).await.unwrap();
        assert_eq!(old, Some(id1));
        assert_ne!(id1, id2);
        assert!(index.chunks(id1).await.unwrap().is_empty());
        // A late writer of the old version cannot record its chunk.
        assert!(index.insert_chunk(id1, chunk).await.is_err());

        let summary: (i64, i64) = index
            .call(|c| {
                c.query_row(
                    "SELECT cached_chunks, total_chunks FROM media_summary",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!(summary, (0, 3));
    }

    /// A version-1 index (no write ids) is brought up to date at open,
    /// its rows kept, each with a write id of its own.
    #[tokio::test]
    async fn version_one_index_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO media VALUES (7, 'http://a/x', 10, 4, NULL, NULL, NULL, 1, 0, 0);
                 INSERT INTO chunks VALUES (7, 0, 4, 99, 0, 0), (7, 1, 4, 98, 0, 0);",
            )
            .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let version: i64 = index
            .call(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let rows = index.chunks(MediaId(7)).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[0].write_id, rows[1].write_id);
    }

    #[test]
    fn schema_from_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        drop(Index::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Index::open(&path),
            Err(IndexError::FromTheFuture { found: 99, .. })
        ));
    }
}
