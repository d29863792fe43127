//! What the cache holds, for people: one summary row per media version and
//! the chunk indexes of one. Plain functions over a connection, so the
//! server (on the index thread) and `spool ls` (on a read-only connection
//! of its own, with no server running) list the same thing the same way.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::MediaId;

/// How much of one media version is cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaSummary {
    pub media_id: i64,
    pub url: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub content_type: Option<String>,
    pub cached_bytes: u64,
    pub cached_chunks: u64,
    pub total_chunks: u64,
    pub last_access_unix: i64,
}

const SELECT: &str = "SELECT m.media_id, m.url, m.size_bytes, m.chunk_size_bytes, m.content_type,
        COALESCE(SUM(c.size_bytes), 0), COUNT(c.chunk_index), m.last_access_unix
    FROM media m LEFT JOIN chunks c ON c.media_id = m.media_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaSummary> {
    let size_bytes = r.get::<_, i64>(2)?.max(0) as u64;
    let chunk_size_bytes = r.get::<_, i64>(3)?.max(1) as u64;
    Ok(MediaSummary {
        media_id: r.get(0)?,
        url: r.get(1)?,
        size_bytes,
        chunk_size_bytes,
        content_type: r.get(4)?,
        cached_bytes: r.get::<_, i64>(5)?.max(0) as u64,
        cached_chunks: r.get::<_, i64>(6)?.max(0) as u64,
        total_chunks: size_bytes.div_ceil(chunk_size_bytes),
        last_access_unix: r.get(7)?,
    })
}

/// Every media version, most recently read first.
pub fn list(c: &Connection) -> rusqlite::Result<Vec<MediaSummary>> {
    let sql = format!("{SELECT} GROUP BY m.media_id ORDER BY m.last_access_unix DESC, m.media_id");
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map([], row)?;
    rows.collect()
}

/// One media version, if the index has it.
pub fn one(c: &Connection, media_id: MediaId) -> rusqlite::Result<Option<MediaSummary>> {
    let sql = format!("{SELECT} WHERE m.media_id = ?1 GROUP BY m.media_id");
    c.prepare_cached(&sql)?
        .query_row([media_id], row)
        .optional()
}

/// The indexes of a media version's cached chunks, in order.
pub fn chunk_indexes(c: &Connection, media_id: MediaId) -> rusqlite::Result<Vec<u64>> {
    let mut st = c.prepare_cached(
        "SELECT chunk_index FROM chunks WHERE media_id = ?1 ORDER BY chunk_index",
    )?;
    let rows = st.query_map([media_id], |r| r.get::<_, i64>(0).map(|i| i as u64))?;
    rows.collect()
}

/// Opens an index read-only (SQLite's `mode=ro`; a symlink in its place
/// is refused), for looking at a cache no server runs on. Nothing is
/// created or migrated: a missing index is an error.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkRow, Index, MediaRow};

    #[tokio::test]
    async fn summaries_from_the_server_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let index = Index::open(&path).unwrap();
        let (a, _) = index
            .replace_media(MediaRow::for_test(0, "http://a/x", 10, 4))
            .await
            .unwrap();
        let (b, _) = index
            .replace_media(MediaRow::for_test(0, "http://a/y", 8, 4))
            .await
            .unwrap();
        index.insert_chunk(a, ChunkRow::new(2, 2, 1)).await.unwrap();
        index.insert_chunk(a, ChunkRow::new(0, 4, 1)).await.unwrap();
        let listed = index.call(|c| list(c)).await.unwrap();
        assert_eq!(listed.len(), 2);
        let x = listed.iter().find(|m| m.media_id == a.0).unwrap();
        assert_eq!((x.cached_bytes, x.cached_chunks, x.total_chunks), (6, 2, 3));
        let y = listed.iter().find(|m| m.media_id == b.0).unwrap();
        assert_eq!((y.cached_bytes, y.cached_chunks, y.total_chunks), (0, 0, 2));

        let ro = open_read_only(&path).unwrap();
        assert_eq!(list(&ro).unwrap(), listed, "the same rows read-only");
        assert_eq!(chunk_indexes(&ro, a).unwrap(), vec![0, 2]);
        assert_eq!(one(&ro, MediaId(999)).unwrap(), None);
        assert!(
            ro.execute("DELETE FROM media", []).is_err(),
            "a read-only connection cannot write"
        );
        assert!(open_read_only(&dir.path().join("missing.db")).is_err());
    }
}
