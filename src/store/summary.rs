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

/// How a page of media is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Most recently read first.
    Recent,
    /// Largest first.
    Size,
    /// Most cached (as a share of the media) first.
    Cached,
    /// By URL.
    Url,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "recent" => Sort::Recent,
            "size" => Sort::Size,
            "cached" => Sort::Cached,
            "url" => Sort::Url,
            _ => return None,
        })
    }

    fn order_by(self) -> &'static str {
        match self {
            Sort::Recent => "m.last_access_unix DESC, m.media_id DESC",
            Sort::Size => "m.size_bytes DESC, m.media_id",
            Sort::Cached => "cached * 1.0 / MAX(m.size_bytes, 1) DESC, m.media_id",
            Sort::Url => "m.url, m.media_id",
        }
    }
}

/// Which media a page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// Only media whose URL (without its query, which may hold a
    /// credential) contains this, ignoring case.
    pub search: Option<String>,
    pub sort: Sort,
    pub offset: u64,
    pub limit: u64,
}

/// One page of media, and how many match in all. Each media's cached
/// bytes and chunks are summed for the media of the page (and for the
/// ordering, when it is by them) through the chunks' primary key, so a
/// page costs little however many media the cache holds.
pub fn page(c: &Connection, q: &PageQuery) -> rusqlite::Result<(Vec<MediaSummary>, u64)> {
    const MATCH: &str = "(?1 IS NULL
        OR instr(lower(substr(m.url, 1, instr(m.url || '?', '?') - 1)), lower(?1)) > 0)";
    let total: i64 = c
        .prepare_cached(&format!("SELECT COUNT(*) FROM media m WHERE {MATCH}"))?
        .query_row([&q.search], |r| r.get(0))?;
    let sql = format!(
        "SELECT m.media_id, m.url, m.size_bytes, m.chunk_size_bytes, m.content_type,
                (SELECT COALESCE(SUM(size_bytes), 0) FROM chunks WHERE media_id = m.media_id)
                    AS cached,
                (SELECT COUNT(*) FROM chunks WHERE media_id = m.media_id),
                m.last_access_unix
         FROM media m WHERE {MATCH}
         ORDER BY {} LIMIT ?2 OFFSET ?3",
        q.sort.order_by()
    );
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(rusqlite::params![q.search, limit, offset], row)?;
    Ok((rows.collect::<Result<_, _>>()?, total.max(0) as u64))
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

    #[test]
    fn pages_search_and_sort() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        // 250 media: "film-N" of N*10 bytes, read at time N, with N%7
        // chunks of 1 byte cached; one URL carries a credential.
        for n in 1..=250i64 {
            c.execute(
                "INSERT INTO media (url, size_bytes, chunk_size_bytes, accepts_ranges,
                                    probed_unix, last_access_unix)
                 VALUES (?1, ?2, 1, 1, 0, ?3)",
                rusqlite::params![
                    format!("http://h/film-{n}.mkv?api_key=secret{n}"),
                    n * 10,
                    n
                ],
            )
            .unwrap();
            for i in 0..n % 7 {
                c.execute(
                    "INSERT INTO chunks (media_id, chunk_index, size_bytes, crc32c, write_id,
                                         created_unix, last_access_unix)
                     VALUES (?1, ?2, 1, 0, ?3, 0, 0)",
                    rusqlite::params![n, i, n * 100 + i],
                )
                .unwrap();
            }
        }
        let q = |search: Option<&str>, sort, offset, limit| PageQuery {
            search: search.map(str::to_owned),
            sort,
            offset,
            limit,
        };
        let ids = |p: &(Vec<MediaSummary>, u64)| p.0.iter().map(|m| m.media_id).collect::<Vec<_>>();
        let recent = page(&c, &q(None, Sort::Recent, 0, 3)).unwrap();
        assert_eq!((ids(&recent), recent.1), (vec![250, 249, 248], 250));
        let next = page(&c, &q(None, Sort::Recent, 3, 3)).unwrap();
        assert_eq!(ids(&next), vec![247, 246, 245]);
        let last = page(&c, &q(None, Sort::Recent, 249, 10)).unwrap();
        assert_eq!(ids(&last), vec![1]);
        assert_eq!(
            ids(&page(&c, &q(None, Sort::Size, 0, 2)).unwrap()),
            vec![250, 249]
        );
        assert_eq!(
            ids(&page(&c, &q(None, Sort::Url, 0, 3)).unwrap()),
            vec![1, 10, 100]
        );
        // Cached share: a tenth for n = 1..6, the most; ties by id.
        let cached = page(&c, &q(None, Sort::Cached, 0, 2)).unwrap();
        assert_eq!(ids(&cached), vec![1, 2]);
        let six = page(&c, &q(Some("FILM-6."), Sort::Recent, 0, 10)).unwrap();
        assert_eq!((ids(&six), six.1), (vec![6], 1));
        assert_eq!((six.0[0].cached_bytes, six.0[0].cached_chunks), (6, 6));
        let twenty = page(&c, &q(Some("film-2"), Sort::Recent, 0, 5)).unwrap();
        assert_eq!(twenty.1, 1 + 10 + 51, "film-2, film-20..29, film-200..250");
        // The query is not searched: it may hold a credential.
        assert_eq!(
            page(&c, &q(Some("secret"), Sort::Recent, 0, 5)).unwrap().1,
            0
        );
        assert_eq!(
            page(&c, &q(Some("api_key"), Sort::Recent, 0, 5)).unwrap().1,
            0
        );
    }
}
