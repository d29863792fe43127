//! The index's history: events and the daily rollup of requests and
//! bytes by source (`migrations/0008_history.sql`, which also has the
//! views people query with the sqlite3 CLI).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::history::Event;

/// What one write adds to the history.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Events dropped in memory since the last write (recorded as one).
    pub dropped: u64,
    /// The day (`YYYY-MM-DD`, UTC) the traffic below is added to.
    pub day: String,
    /// (source, requests, bytes) served since the last write.
    pub traffic: Vec<(&'static str, u64, u64)>,
}

/// Writes `batch` in one transaction.
pub fn write(c: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (at_unix, kind, media_id, chunk_index, chunks, bytes, reason, url, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        for e in &batch.events {
            ins.execute(params![
                e.at_unix,
                e.kind.as_str(),
                e.media_id,
                n(e.chunk),
                n(e.chunks),
                n(e.bytes),
                e.reason,
                e.url,
                n(Some(e.count)),
            ])?;
        }
        if batch.dropped > 0 {
            let at = batch.events.last().map_or(0, |e| e.at_unix);
            ins.execute(params![
                at,
                "events_dropped",
                None::<i64>,
                None::<i64>,
                None::<i64>,
                None::<i64>,
                "more events than the history keeps between writes",
                None::<String>,
                n(Some(batch.dropped)),
            ])?;
        }
        let mut add = tx.prepare_cached(
            "INSERT INTO daily (day, source, requests, bytes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (day, source) DO UPDATE
             SET requests = requests + excluded.requests, bytes = bytes + excluded.bytes",
        )?;
        for &(source, requests, bytes) in &batch.traffic {
            if requests > 0 || bytes > 0 {
                add.execute(params![
                    batch.day,
                    source,
                    n(Some(requests)),
                    n(Some(bytes))
                ])?;
            }
        }
    }
    tx.commit()
}

/// The URLs of `ids`, whole (the caller shows them redacted).
pub fn media_urls(c: &Connection, ids: &[i64]) -> rusqlite::Result<HashMap<i64, String>> {
    let mut st = c.prepare_cached("SELECT url FROM media WHERE media_id = ?1")?;
    let mut out = HashMap::new();
    for &id in ids {
        if let Some(url) = st.query_row([id], |r| r.get::<_, String>(0)).optional()? {
            out.insert(id, url);
        }
    }
    Ok(out)
}

/// Removes at most `limit` events older than `before_unix`; returns how
/// many went (fewer than `limit`: none are left).
pub fn prune(c: &Connection, before_unix: i64, limit: u32) -> rusqlite::Result<usize> {
    c.execute(
        "DELETE FROM events WHERE event_id IN
           (SELECT event_id FROM events WHERE at_unix < ?1 ORDER BY at_unix LIMIT ?2)",
        params![before_unix, limit],
    )
}

/// Records `version` as the one that opened the index; returns the one
/// before it (None on a new index or the first start that kept one).
pub fn swap_version(c: &Connection, version: &str) -> rusqlite::Result<Option<String>> {
    let before: Option<String> = c
        .query_row(
            "SELECT value FROM spool_meta WHERE key = 'version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    c.execute(
        "INSERT INTO spool_meta (key, value) VALUES ('version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [version],
    )?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Kind;
    use crate::store::schema;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        schema::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn traffic_adds_up_by_day_and_events_are_pruned_in_batches() {
        let mut c = db();
        let mut batch = Batch {
            day: "2026-12-05".into(),
            traffic: vec![("cache", 3, 300), ("origin", 1, 100), ("memory", 0, 0)],
            ..Batch::default()
        };
        for at in 0..5 {
            batch
                .events
                .push(Event::new(Kind::Quarantine, at).media(1).chunk(0));
        }
        write(&mut c, &batch).unwrap();
        batch.events.clear();
        batch.dropped = 7;
        write(&mut c, &batch).unwrap();
        let row: (i64, i64, i64, f64) = c
            .query_row(
                "SELECT requests, bytes_cache, bytes_origin, hit_percent FROM daily_traffic",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, (8, 600, 200, 75.0));
        let memory: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM daily WHERE source = 'memory'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(memory, 0, "nothing served is no row");
        let dropped: i64 = c
            .query_row(
                "SELECT count FROM events WHERE kind = 'events_dropped'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(dropped, 7);
        assert_eq!(prune(&c, 4, 3).unwrap(), 3);
        assert_eq!(prune(&c, 4, 3).unwrap(), 2, "those before 4 left");
        assert_eq!(prune(&c, 4, 3).unwrap(), 0);
        assert_eq!(swap_version(&c, "0.1.0").unwrap(), None);
        assert_eq!(swap_version(&c, "0.2.0").unwrap().as_deref(), Some("0.1.0"));
    }
}
