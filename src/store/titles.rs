//! Titles in the index: what a playlist named is recorded as one title,
//! listed as one row beside the files no playlist names, and pinned.
//! Plain functions over a connection, like `summary.rs`, so the server
//! and `spool ls` (read-only, no server running) list titles the same way.

use rusqlite::{params, Connection, OptionalExtension};

use super::summary::{PageQuery, Sort};
#[cfg(test)]
use super::title_budget::count_parts;
pub(crate) use super::title_budget::{PartBudget, MAX_TITLE_PARTS};

/// What one playlist or manifest says of its title, to record.
#[derive(Debug, Clone, Default)]
pub(crate) struct TitleRecord {
    /// The playlist's URL as asked for.
    pub url: String,
    /// `hls` or `dash`.
    pub kind: &'static str,
    pub duration_secs: Option<f64>,
    /// Playlists it names (an HLS master's variants and renditions): a
    /// title one of them started before is merged into this one.
    pub playlists: Vec<String>,
    /// How many renditions it names.
    pub renditions: u64,
    /// Files it names: URL, role, and the stream they belong to.
    pub files: Vec<(String, &'static str, String)>,
}

/// Whether some title names `url` already.
fn known(c: &Connection, url: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM title_parts WHERE url = ?1")?
        .query_row([url], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Records what a playlist named, in one transaction: the title it
/// belongs to (the one that named it before, or a new one), its parts,
/// and any title a playlist it names had started, merged in; no more
/// parts than `budget` and [`MAX_TITLE_PARTS`] leave room for. Returns
/// the title's id and URL, and how many parts found no room; None when
/// there is no room for a new title.
pub(crate) fn record(
    c: &mut Connection,
    r: &TitleRecord,
    now: i64,
    budget: &PartBudget,
) -> rusqlite::Result<Option<(i64, String, u64)>> {
    // Rolled back, what the budget counted (titles forgotten to make room
    // among it) may not be so: it counts again next time.
    record_in(c, r, now, budget).inspect_err(|_| budget.unknown())
}

fn record_in(
    c: &mut Connection,
    r: &TitleRecord,
    now: i64,
    budget: &PartBudget,
) -> rusqlite::Result<Option<(i64, String, u64)>> {
    let tx = c.transaction()?;
    let mut total_room = budget.room(&tx, &r.url)?;
    let owner: Option<i64> = tx
        .prepare_cached("SELECT title_id FROM title_parts WHERE url = ?1")?
        .query_row([&r.url], |row| row.get(0))
        .optional()?;
    let title = match owner {
        Some(t) => t,
        // No room for a new title's own part: nothing is recorded.
        None if total_room == 0 => return Ok(None),
        None => {
            let t: i64 = tx
                .prepare_cached(
                    "INSERT INTO titles (url, kind, created_unix, last_access_unix)
                     VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT (url) DO UPDATE SET last_access_unix = excluded.last_access_unix
                     RETURNING title_id",
                )?
                .query_row(params![r.url, r.kind, now], |row| row.get(0))?;
            // A title's own playlist is always one of its parts.
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO title_parts (url, title_id, role, stream) VALUES (?1, ?2, 'playlist', ?1)",
                )?
                .execute(params![r.url, t])?;
            budget.added(n as u64);
            total_room -= (n as u64).min(total_room);
            t
        }
    };
    for p in &r.playlists {
        let other: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT title_id, pinned FROM titles WHERE url = ?1 AND title_id != ?2",
            )?
            .query_row(params![p, title], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((other, pinned)) = other {
            tx.prepare_cached(
                "UPDATE OR IGNORE title_parts SET title_id = ?1 WHERE title_id = ?2",
            )?
            .execute(params![title, other])?;
            tx.prepare_cached("UPDATE titles SET pinned = MAX(pinned, ?2) WHERE title_id = ?1")?
                .execute(params![title, pinned])?;
            tx.prepare_cached("DELETE FROM titles WHERE title_id = ?1")?
                .execute([other])?;
        }
    }
    // Counted with what the merges brought in.
    let has: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM title_parts WHERE title_id = ?1")?
        .query_row([title], |row| row.get(0))?;
    let room = MAX_TITLE_PARTS
        .saturating_sub(has.max(0) as u64)
        .min(total_room);
    let (mut added, mut dropped) = (0u64, 0u64);
    for p in &r.playlists {
        if added >= room {
            dropped += u64::from(!known(&tx, p)?);
            continue;
        }
        added += tx
            .prepare_cached(
                "INSERT OR IGNORE INTO title_parts (url, title_id, role, stream) VALUES (?1, ?2, 'playlist', ?1)",
            )?
            .execute(params![p, title])? as u64;
    }
    {
        let mut st = tx.prepare_cached(
            "INSERT OR IGNORE INTO title_parts (url, title_id, role, stream) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (url, role, stream) in &r.files {
            if added >= room {
                dropped += u64::from(!known(&tx, url)?);
                continue;
            }
            added += st.execute(params![url, title, role, stream])? as u64;
        }
    }
    tx.prepare_cached(
        "UPDATE titles SET last_access_unix = MAX(last_access_unix, ?2),
                duration_secs = MAX(COALESCE(duration_secs, 0), COALESCE(?3, 0)),
                renditions = MAX(renditions, ?4)
         WHERE title_id = ?1",
    )?
    .execute(params![title, now, r.duration_secs, r.renditions as i64])?;
    let url: String = tx
        .prepare_cached("SELECT url FROM titles WHERE title_id = ?1")?
        .query_row([title], |row| row.get(0))?;
    tx.commit()?;
    budget.added(added);
    Ok(Some((title, url, dropped)))
}

/// The title `url` belongs to (as its playlist or as one of its parts).
pub(crate) fn title_of(c: &Connection, url: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(
        "SELECT title_id FROM titles WHERE url = ?1
         UNION ALL SELECT title_id FROM title_parts WHERE url = ?1 LIMIT 1",
    )?
    .query_row([url], |r| r.get(0))
    .optional()
}

/// Pins or unpins the title `url` belongs to; a file no playlist names
/// becomes a title of its own to be pinned. Returns the title's id, None
/// when `url` is neither a title's nor a media's.
pub(crate) fn set_pinned(
    c: &mut Connection,
    url: &str,
    pinned: bool,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let tx = c.transaction()?;
    let mut title = title_of(&tx, url)?;
    if title.is_none() && pinned {
        let media: bool = tx
            .prepare_cached("SELECT 1 FROM media WHERE url = ?1")?
            .query_row([url], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if media {
            let t: i64 = tx
                .prepare_cached(
                    "INSERT INTO titles (url, kind, renditions, created_unix, last_access_unix)
                     VALUES (?1, 'file', 1, ?2, ?2) RETURNING title_id",
                )?
                .query_row(params![url, now], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO title_parts (url, title_id, role, stream) VALUES (?1, ?2, 'file', ?1)",
            )?
            .execute(params![url, t])?;
            title = Some(t);
        }
    }
    if let Some(t) = title {
        tx.prepare_cached("UPDATE titles SET pinned = ?2 WHERE title_id = ?1")?
            .execute(params![t, pinned])?;
    }
    tx.commit()?;
    Ok(title)
}

/// Pins or unpins the title of media `id` (a file no playlist names
/// becomes a title of its own); None when there is no such media.
pub(crate) fn set_pinned_media(
    c: &mut Connection,
    id: i64,
    pinned: bool,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let url: Option<String> = c
        .prepare_cached("SELECT url FROM media WHERE media_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match url {
        Some(u) => set_pinned(c, &u, pinned, now),
        None => Ok(None),
    }
}

/// Pins or unpins title `id`; false when there is none.
pub(crate) fn pin_title(c: &Connection, id: i64, pinned: bool) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached("UPDATE titles SET pinned = ?2 WHERE title_id = ?1")?
        .execute(params![id, pinned])?;
    Ok(n > 0)
}

/// SQL naming the media of pinned titles (for eviction).
pub(crate) const PINNED_MEDIA: &str = "SELECT m.media_id FROM titles t
    JOIN title_parts p ON p.title_id = t.title_id
    JOIN media m ON m.url = p.url
    WHERE t.pinned = 1";

/// Removes titles nobody pinned whose parts are no media any more and
/// that were not reached since `before`; returns how many went.
pub(crate) fn prune(c: &Connection, before: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM titles WHERE pinned = 0 AND last_access_unix < ?1
           AND NOT EXISTS (SELECT 1 FROM title_parts p JOIN media m ON m.url = p.url
                           WHERE p.title_id = titles.title_id)",
    )?
    .execute([before])
}

/// One row of the list of what the cache holds: a title, or a file no
/// playlist names.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TitleSummary {
    /// Set for a title (a playlist's, or a pinned file's).
    pub title_id: Option<i64>,
    /// Set for a file no title names.
    pub media_id: Option<i64>,
    pub url: String,
    /// `hls`, `dash` or `file`.
    pub kind: String,
    /// Bytes of its files known so far (a segment no player or prefetch
    /// opened yet has no known size).
    pub size_bytes: u64,
    pub cached_bytes: u64,
    /// Of the renditions played (those with any byte cached): the share
    /// of their files' bytes cached, a file not opened yet counting as
    /// none. A file: its bytes cached.
    pub cached_percent: f64,
    pub duration_secs: Option<f64>,
    pub renditions: u64,
    /// Files it names (segments, keys, initialization sections), and how
    /// many of them are cached whole.
    pub files: u64,
    pub cached_files: u64,
    pub pinned: bool,
    pub last_access_unix: i64,
}

/// A title's figures from its parts, the rendition rule of
/// `TitleSummary::cached_percent` applied.
const TITLE_FIGURES: &str = "
WITH pm AS (
    SELECT p.stream,
           m.size_bytes AS size,
           (SELECT COALESCE(SUM(c.size_bytes), 0) FROM chunks c WHERE c.media_id = m.media_id) AS cached,
           m.last_access_unix AS seen
    FROM title_parts p LEFT JOIN media m ON m.url = p.url
    WHERE p.title_id = ?1 AND p.role != 'playlist'
), st AS (
    SELECT stream, COUNT(*) AS files,
           SUM(CASE WHEN size > 0 AND cached >= size THEN 1 ELSE 0 END) AS done,
           SUM(CASE WHEN size > 0 THEN 1.0 * cached / size ELSE 0 END) AS frac,
           SUM(COALESCE(size, 0)) AS size, SUM(COALESCE(cached, 0)) AS cached,
           MAX(COALESCE(seen, 0)) AS seen
    FROM pm GROUP BY stream
)
SELECT COALESCE(SUM(files), 0), COALESCE(SUM(done), 0),
       COALESCE(SUM(CASE WHEN cached > 0 THEN frac END), 0),
       COALESCE(SUM(CASE WHEN cached > 0 THEN files END), 0),
       COALESCE(SUM(size), 0), COALESCE(SUM(cached), 0), COALESCE(MAX(seen), 0)
FROM st";

/// One title's row.
pub fn title(c: &Connection, title_id: i64) -> rusqlite::Result<Option<TitleSummary>> {
    let head = c
        .prepare_cached(
            "SELECT url, kind, duration_secs, renditions, pinned, last_access_unix
             FROM titles WHERE title_id = ?1",
        )?
        .query_row([title_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    let Some((url, kind, duration, renditions, pinned, access)) = head else {
        return Ok(None);
    };
    let (files, done, frac, played, size, cached, seen) = c
        .prepare_cached(TITLE_FIGURES)?
        .query_row([title_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
    let percent = if played > 0 {
        (1000.0 * frac / played as f64).round() / 10.0
    } else {
        0.0
    };
    Ok(Some(TitleSummary {
        title_id: Some(title_id),
        media_id: None,
        url,
        kind,
        size_bytes: size.max(0) as u64,
        cached_bytes: cached.max(0) as u64,
        cached_percent: percent.min(100.0),
        duration_secs: duration.filter(|d| *d > 0.0),
        renditions: renditions.max(0) as u64,
        files: files.max(0) as u64,
        cached_files: done.max(0) as u64,
        pinned,
        last_access_unix: access.max(seen),
    }))
}

/// A file no title names, as a row of the list.
fn file(c: &Connection, media_id: i64) -> rusqlite::Result<Option<TitleSummary>> {
    let Some(m) = super::summary::one(c, super::MediaId(media_id))? else {
        return Ok(None);
    };
    let percent = (1000.0 * m.cached_bytes as f64 / m.size_bytes.max(1) as f64).round() / 10.0;
    Ok(Some(TitleSummary {
        title_id: None,
        media_id: Some(m.media_id),
        url: m.url,
        kind: "file".into(),
        size_bytes: m.size_bytes,
        cached_bytes: m.cached_bytes,
        cached_percent: percent.min(100.0),
        duration_secs: None,
        renditions: 1,
        files: 1,
        cached_files: u64::from(m.cached_bytes >= m.size_bytes),
        pinned: false,
        last_access_unix: m.last_access_unix,
    }))
}

/// One page of the list, and how many rows match in all. The page is
/// chosen on cheap keys (a title's size is the sum of its media's sizes,
/// its cached share its bytes cached over them), then only its rows get
/// their figures; titles come before files of the same key.
pub fn page(c: &Connection, q: &PageQuery) -> rusqlite::Result<(Vec<TitleSummary>, u64)> {
    const MATCH_T: &str = "(?1 IS NULL
        OR instr(lower(substr(t.url, 1, instr(t.url || '?', '?') - 1)), lower(?1)) > 0)";
    const MATCH_M: &str = "(?1 IS NULL
        OR instr(lower(substr(m.url, 1, instr(m.url || '?', '?') - 1)), lower(?1)) > 0)";
    const LONE: &str = "NOT EXISTS (SELECT 1 FROM title_parts p WHERE p.url = m.url)";
    let total: i64 = c
        .prepare_cached(&format!(
            "SELECT (SELECT COUNT(*) FROM titles t WHERE {MATCH_T})
                  + (SELECT COUNT(*) FROM media m WHERE {MATCH_M} AND {LONE})"
        ))?
        .query_row([&q.search], |r| r.get(0))?;
    let t_size = "(SELECT COALESCE(SUM(m.size_bytes), 0) FROM title_parts p JOIN media m ON m.url = p.url WHERE p.title_id = t.title_id)";
    let t_cached = "(SELECT COALESCE(SUM(c.size_bytes), 0) FROM title_parts p JOIN media m ON m.url = p.url JOIN chunks c ON c.media_id = m.media_id WHERE p.title_id = t.title_id)";
    let m_cached =
        "(SELECT COALESCE(SUM(c.size_bytes), 0) FROM chunks c WHERE c.media_id = m.media_id)";
    let (tk, mk, order) = match q.sort {
        Sort::Recent => (
            "t.last_access_unix".to_owned(),
            "m.last_access_unix".to_owned(),
            "k DESC, f, id DESC",
        ),
        Sort::Size => (
            t_size.to_owned(),
            "m.size_bytes".to_owned(),
            "k DESC, f, id",
        ),
        Sort::Cached => (
            format!("1.0 * {t_cached} / MAX({t_size}, 1)"),
            format!("1.0 * {m_cached} / MAX(m.size_bytes, 1)"),
            "k DESC, f, id",
        ),
        Sort::Url => ("t.url".to_owned(), "m.url".to_owned(), "k, f, id"),
    };
    let sql = format!(
        "SELECT 0 AS f, t.title_id AS id, {tk} AS k FROM titles t WHERE {MATCH_T}
         UNION ALL
         SELECT 1, m.media_id, {mk} FROM media m WHERE {MATCH_M} AND {LONE}
         ORDER BY {order} LIMIT ?2 OFFSET ?3"
    );
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let keys: Vec<(bool, i64)> = c
        .prepare_cached(&sql)?
        .query_map(params![q.search, limit, offset], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(keys.len());
    for (is_file, id) in keys {
        let row = if is_file { file(c, id)? } else { title(c, id)? };
        rows.extend(row);
    }
    Ok((rows, total.max(0) as u64))
}

/// One file of a title, as its page shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartSummary {
    pub url: String,
    pub role: String,
    /// The rendition it belongs to (a playlist URL, or a DASH
    /// representation's first file).
    pub stream: Option<String>,
    /// Set once it is a media (opened by a player or a prefetch).
    pub media_id: Option<i64>,
    pub size_bytes: Option<u64>,
    pub cached_bytes: u64,
}

/// A title's parts, by rendition, in the order they were named; at most
/// `limit` from `offset`.
pub fn parts(
    c: &Connection,
    title_id: i64,
    offset: u64,
    limit: u64,
) -> rusqlite::Result<Vec<PartSummary>> {
    let mut st = c.prepare_cached(
        "SELECT p.url, p.role, p.stream, m.media_id, m.size_bytes,
                (SELECT COALESCE(SUM(c.size_bytes), 0) FROM chunks c WHERE c.media_id = m.media_id)
         FROM title_parts p LEFT JOIN media m ON m.url = p.url
         WHERE p.title_id = ?1 ORDER BY p.stream, p.rowid LIMIT ?2 OFFSET ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows = st.query_map(params![title_id, limit, offset], |r| {
        Ok(PartSummary {
            url: r.get(0)?,
            role: r.get(1)?,
            stream: r.get(2)?,
            media_id: r.get(3)?,
            size_bytes: r.get::<_, Option<i64>>(4)?.map(|s| s.max(0) as u64),
            cached_bytes: r.get::<_, Option<i64>>(5)?.unwrap_or(0).max(0) as u64,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records with room for everything.
    fn record(
        c: &mut Connection,
        r: &TitleRecord,
        now: i64,
    ) -> rusqlite::Result<(i64, String, u64)> {
        super::record(c, r, now, &PartBudget::default()).map(|t| t.expect("room"))
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::configure(&c).unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    fn media(c: &Connection, url: &str, size: i64, cached: i64, at: i64) -> i64 {
        c.execute(
            "INSERT INTO media (url, size_bytes, chunk_size_bytes, accepts_ranges, probed_unix, last_access_unix)
             VALUES (?1, ?2, 1000, 1, 0, ?3)",
            params![url, size, at],
        )
        .unwrap();
        let id = c.last_insert_rowid();
        if cached > 0 {
            c.execute(
                "INSERT INTO chunks (media_id, chunk_index, size_bytes, crc32c, created_unix, last_access_unix)
                 VALUES (?1, 0, ?2, 0, 0, 0)",
                params![id, cached],
            )
            .unwrap();
        }
        id
    }

    fn segments(playlist: &str, n: usize) -> TitleRecord {
        TitleRecord {
            url: playlist.into(),
            kind: "hls",
            duration_secs: Some(2.0 * n as f64),
            files: (0..n)
                .map(|i| {
                    (
                        format!("{playlist}/s{i}.ts"),
                        "segment",
                        playlist.to_owned(),
                    )
                })
                .collect(),
            ..TitleRecord::default()
        }
    }

    /// A variant played before its master is one title with it once the
    /// master is fetched; the title's figures count the rendition played.
    #[test]
    fn a_master_gathers_its_variants_and_their_segments() {
        let mut c = db();
        let lo = record(&mut c, &segments("http://o/lo.m3u8", 4), 10)
            .unwrap()
            .0;
        c.execute("UPDATE titles SET pinned = 1 WHERE title_id = ?1", [lo])
            .unwrap();
        let master = TitleRecord {
            url: "http://o/master.m3u8".into(),
            kind: "hls",
            playlists: vec!["http://o/lo.m3u8".into(), "http://o/hi.m3u8".into()],
            renditions: 2,
            ..TitleRecord::default()
        };
        let t = record(&mut c, &master, 20).unwrap().0;
        assert_ne!(t, lo);
        assert_eq!(
            record(&mut c, &segments("http://o/hi.m3u8", 4), 30)
                .unwrap()
                .0,
            t
        );
        assert_eq!(
            record(&mut c, &segments("http://o/lo.m3u8", 4), 40)
                .unwrap()
                .0,
            t,
            "again: the same"
        );
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM titles", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "the variant's own title was merged");
        // Two of lo's segments opened: one whole, one half.
        media(&c, "http://o/lo.m3u8/s0.ts", 100, 100, 50);
        media(&c, "http://o/lo.m3u8/s1.ts", 100, 50, 60);
        media(&c, "http://lone/film.mp4", 1000, 250, 5);
        let s = title(&c, t).unwrap().unwrap();
        assert_eq!(s.files, 8);
        assert_eq!(
            (s.size_bytes, s.cached_bytes, s.cached_files),
            (200, 150, 1)
        );
        assert_eq!(
            s.cached_percent, 37.5,
            "of the rendition played: 1.5 of 4 segments"
        );
        assert_eq!(s.duration_secs, Some(8.0));
        assert_eq!(s.renditions, 2);
        assert!(s.pinned, "a pin survives the merge");
        assert_eq!(s.last_access_unix, 60);

        let q = |search: Option<&str>, sort| PageQuery {
            search: search.map(str::to_owned),
            sort,
            offset: 0,
            limit: 10,
        };
        let (rows, total) = page(&c, &q(None, Sort::Recent)).unwrap();
        assert_eq!(total, 2, "the title and the lone file; not the segments");
        assert_eq!(rows[0].title_id, Some(t));
        assert_eq!(rows[1].kind, "file");
        assert_eq!(rows[1].cached_percent, 25.0);
        let (rows, _) = page(&c, &q(Some("FILM"), Sort::Size)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].url, "http://lone/film.mp4");
        let (rows, _) = page(&c, &q(None, Sort::Cached)).unwrap();
        assert_eq!(rows[0].title_id, Some(t), "150/200 before 250/1000");
        let p = parts(&c, t, 0, 100).unwrap();
        assert_eq!(p.len(), 11, "master, two variants, eight segments");
        let s0 = p.iter().find(|p| p.url.ends_with("lo.m3u8/s0.ts")).unwrap();
        assert_eq!((s0.size_bytes, s0.cached_bytes), (Some(100), 100));
    }

    #[test]
    fn pins_name_a_title_or_make_a_file_one() {
        let mut c = db();
        let t = record(&mut c, &segments("http://o/v.m3u8", 2), 1)
            .unwrap()
            .0;
        assert_eq!(
            set_pinned(&mut c, "http://o/v.m3u8/s1.ts", true, 2).unwrap(),
            Some(t)
        );
        let seg = media(&c, "http://o/v.m3u8/s1.ts", 10, 10, 1);
        let lone = media(&c, "http://lone/a.mkv", 10, 10, 1);
        media(&c, "http://lone/b.mkv", 10, 10, 1);
        let f = set_pinned(&mut c, "http://lone/a.mkv", true, 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            set_pinned(&mut c, "http://nothing/here", true, 2).unwrap(),
            None
        );
        let mut pinned: Vec<i64> = c
            .prepare(PINNED_MEDIA)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        pinned.sort();
        assert_eq!(pinned, [seg, lone]);
        let s = title(&c, f).unwrap().unwrap();
        assert_eq!((s.kind.as_str(), s.pinned, s.files), ("file", true, 1));
        set_pinned(&mut c, "http://o/v.m3u8", false, 3).unwrap();
        assert!(!title(&c, t).unwrap().unwrap().pinned);
    }

    #[test]
    fn titles_without_media_are_pruned_unless_pinned() {
        let mut c = db();
        let a = record(&mut c, &segments("http://o/a.m3u8", 2), 10)
            .unwrap()
            .0;
        let b = record(&mut c, &segments("http://o/b.m3u8", 2), 10)
            .unwrap()
            .0;
        let p = record(&mut c, &segments("http://o/p.m3u8", 2), 10)
            .unwrap()
            .0;
        set_pinned(&mut c, "http://o/p.m3u8", true, 10).unwrap();
        media(&c, "http://o/b.m3u8/s0.ts", 10, 0, 10);
        assert_eq!(prune(&c, 5).unwrap(), 0, "all reached since");
        assert_eq!(prune(&c, 11).unwrap(), 1);
        assert!(title(&c, a).unwrap().is_none());
        assert!(title(&c, b).unwrap().is_some());
        assert!(title(&c, p).unwrap().is_some());
        let left: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM title_parts WHERE title_id = ?1",
                [a],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "its parts went with it");
    }

    /// What playlists name is bounded, per title and in all: at the limit
    /// the titles with nothing cached reached longest ago make room, and
    /// with none left, what finds no room is not recorded.
    #[test]
    fn parts_are_bounded() {
        let rec = |c: &mut Connection, r: &TitleRecord, now: i64, b: &PartBudget| {
            super::record(c, r, now, b).map(|t| t.expect("room for the title"))
        };
        let mut c = db();
        let budget = PartBudget::new(100);
        // Ten idle titles of 9 parts each (their playlist and 8 files).
        for i in 0..10 {
            let (_, _, dropped) = rec(
                &mut c,
                &segments(&format!("http://o/{i}.m3u8"), 8),
                i,
                &budget,
            )
            .unwrap();
            assert_eq!(dropped, 0);
        }
        assert_eq!(count_parts(&c).unwrap(), 90);
        // One cached title of 9 more: over the limit, it takes the room
        // it finds (10); the next record makes room by forgetting the
        // oldest idle titles, down to nine tenths of the limit.
        let cached = segments("http://o/kept.m3u8", 30);
        media(&c, "http://o/kept.m3u8/s0.ts", 1000, 1000, 50);
        let (kept, _, dropped) = rec(&mut c, &cached, 50, &budget).unwrap();
        assert_eq!(dropped, 21, "31 parts, room for 10 with its playlist");
        assert_eq!(count_parts(&c).unwrap(), 100);
        let (_, _, dropped) = rec(&mut c, &segments("http://o/new.m3u8", 4), 60, &budget).unwrap();
        assert_eq!(dropped, 0);
        let left: Vec<String> = c
            .prepare("SELECT url FROM titles ORDER BY title_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!left.contains(&"http://o/0.m3u8".to_owned()), "{left:?}");
        assert!(left.contains(&"http://o/9.m3u8".to_owned()), "{left:?}");
        assert!(
            left.contains(&"http://o/kept.m3u8".to_owned()),
            "the cached title stays"
        );
        let n = count_parts(&c).unwrap();
        assert!(n < 90 + 5, "{n}");
        assert_eq!(
            title_of(&c, "http://o/kept.m3u8/s0.ts").unwrap(),
            Some(kept)
        );
        // Nothing idle left to forget: past the limit, parts find no room.
        let mut c = db();
        let budget = PartBudget::new(20);
        media(&c, "http://o/a.m3u8/s0.ts", 1000, 1000, 1);
        let (_, _, dropped) = rec(&mut c, &segments("http://o/a.m3u8", 30), 1, &budget).unwrap();
        assert_eq!(dropped, 11, "31 parts, room for 20");
        let b = super::record(&mut c, &segments("http://o/b.m3u8", 3), 2, &budget).unwrap();
        assert!(b.is_none(), "no room for a new title");
        assert_eq!(count_parts(&c).unwrap(), 20);
        // An existing title finds no room either.
        let (_, _, dropped) = rec(&mut c, &segments("http://o/a.m3u8", 31), 3, &budget).unwrap();
        assert_eq!(dropped, 12, "s19 to s30: those recorded before are no loss");
        assert_eq!(count_parts(&c).unwrap(), 20);
        // The title being recorded is never the one forgotten for room,
        // however long ago it was reached.
        let mut c = db();
        let budget = PartBudget::new(20);
        let old = rec(&mut c, &segments("http://o/old.m3u8", 9), 1, &budget)
            .unwrap()
            .0;
        rec(&mut c, &segments("http://o/b.m3u8", 9), 2, &budget).unwrap();
        let again = rec(&mut c, &segments("http://o/old.m3u8", 12), 3, &budget).unwrap();
        assert_eq!(again.0, old);
        assert_eq!(again.2, 0);
        assert_eq!(
            title_of(&c, "http://o/b.m3u8").unwrap(),
            None,
            "b made room"
        );
        assert_eq!(count_parts(&c).unwrap(), 13);
    }
}
