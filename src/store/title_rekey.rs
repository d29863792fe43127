//! Titles and parts recorded under a URL that is not their cache key
//! (before titles went by the key, or before the settings named one of
//! its parameters) moved to the key, a batch at a time, at start.

use rusqlite::{params, Connection, OptionalExtension};

use super::title_budget::PartBudget;

/// Where [`rekey`] goes on from: the parts after a rowid, then the
/// titles after an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RekeyFrom {
    Parts(i64),
    Titles(i64),
}

/// Titles or parts [`rekey`] looks at per call.
const REKEY_BATCH: usize = 1000;

/// Moves titles and parts recorded under a URL whose cache key `key`
/// gives differently (recorded before titles went by the key, or before
/// the settings named that parameter) to the key, a batch from `from` at
/// a time: a part already known under its key stays with that title, and
/// a title whose key another title has is merged into it (its pin kept).
/// Only URLs with a query are looked at. Returns where the next batch
/// starts (None: done) and how many titles and parts moved (the parts
/// merged away are counted again in `budget`).
pub(crate) fn rekey(
    c: &mut Connection,
    key: impl Fn(&str) -> Option<String>,
    budget: &PartBudget,
    from: RekeyFrom,
) -> rusqlite::Result<(Option<RekeyFrom>, usize)> {
    let tx = c.transaction()?;
    let mut moved = 0;
    let batch = |sql: &str, after: i64| -> rusqlite::Result<Vec<(i64, String)>> {
        let mut st = tx.prepare_cached(sql)?;
        let rows = st.query_map(params![after, REKEY_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    // The rows whose URL has another key, with it.
    let moving = |rows: &[(i64, String)]| -> Vec<(i64, String, String)> {
        let moves =
            |(id, url): &(i64, String)| Some((*id, url.clone(), key(url).filter(|k| k != url)?));
        rows.iter().filter_map(moves).collect()
    };
    let next = |rows: &[(i64, String)], more: RekeyFrom| match rows.last() {
        Some(&(last, _)) if rows.len() == REKEY_BATCH => Some(more.at(last)),
        _ => None,
    };
    let after = match from {
        RekeyFrom::Parts(after) => {
            let rows = batch(
                "SELECT rowid, url FROM title_parts WHERE rowid > ?1 AND instr(url, '?') > 0
                 ORDER BY rowid LIMIT ?2",
                after,
            )?;
            for (row, url, k) in moving(&rows) {
                let title: i64 = tx.query_row(
                    "SELECT title_id FROM title_parts WHERE rowid = ?1",
                    [row],
                    |r| r.get(0),
                )?;
                let n = tx.execute(
                    "UPDATE OR IGNORE title_parts SET url = ?2 WHERE rowid = ?1",
                    params![row, k],
                )?;
                if n == 0 {
                    tx.execute("DELETE FROM title_parts WHERE rowid = ?1", [row])?;
                }
                // The rendition it names, among its title's parts (by the
                // index on title and stream).
                tx.execute(
                    "UPDATE title_parts SET stream = ?2 WHERE title_id = ?3 AND stream = ?1",
                    params![url, k, title],
                )?;
                moved += 1;
            }
            next(&rows, RekeyFrom::Parts(0)).or(Some(RekeyFrom::Titles(0)))
        }
        RekeyFrom::Titles(after) => {
            let rows = batch(
                "SELECT title_id, url FROM titles WHERE title_id > ?1 AND instr(url, '?') > 0
                 ORDER BY title_id LIMIT ?2",
                after,
            )?;
            for (title, _, k) in moving(&rows) {
                let other: Option<i64> = tx
                    .query_row("SELECT title_id FROM titles WHERE url = ?1", [&k], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let Some(other) = other else {
                    tx.execute(
                        "UPDATE titles SET url = ?2 WHERE title_id = ?1",
                        params![title, k],
                    )?;
                    moved += 1;
                    continue;
                };
                tx.execute(
                    "UPDATE OR IGNORE title_parts SET title_id = ?1 WHERE title_id = ?2",
                    params![other, title],
                )?;
                tx.execute(
                    "UPDATE titles SET
                       pinned = MAX(pinned, (SELECT pinned FROM titles WHERE title_id = ?2)),
                       last_access_unix = MAX(last_access_unix,
                         (SELECT last_access_unix FROM titles WHERE title_id = ?2))
                     WHERE title_id = ?1",
                    params![other, title],
                )?;
                tx.execute("DELETE FROM titles WHERE title_id = ?1", [title])?;
                moved += 1;
            }
            next(&rows, RekeyFrom::Titles(0))
        }
    };
    tx.commit()?;
    if moved > 0 {
        budget.unknown();
    }
    Ok((after, moved))
}

impl RekeyFrom {
    fn at(self, after: i64) -> RekeyFrom {
        match self {
            RekeyFrom::Parts(_) => RekeyFrom::Parts(after),
            RekeyFrom::Titles(_) => RekeyFrom::Titles(after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::titles::{pin_title, record, TitleRecord};
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::configure(&c).unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    /// Records with room for everything.
    fn add(c: &mut Connection, r: &TitleRecord, now: i64) -> i64 {
        record(c, r, now, &PartBudget::default())
            .unwrap()
            .expect("room")
            .0
    }

    /// `rekey` batch after batch until done; how many moved.
    fn rekey_all(c: &mut Connection, key: impl Fn(&str) -> Option<String> + Copy) -> usize {
        let budget = PartBudget::default();
        let (mut from, mut moved) = (Some(RekeyFrom::Parts(0)), 0);
        while let Some(f) = from {
            let (next, n) = rekey(c, key, &budget, f).unwrap();
            (from, moved) = (next, moved + n);
        }
        moved
    }

    /// More parts than one batch holds: every one moves.
    #[test]
    fn rekey_goes_on_batch_after_batch() {
        let mut c = db();
        let files = (0..2500)
            .map(|i| {
                (
                    format!("http://o/s{i}.ts?token=a"),
                    "segment",
                    "http://o/i.m3u8".to_owned(),
                )
            })
            .collect();
        let r = TitleRecord {
            url: "http://o/i.m3u8".into(),
            kind: "hls",
            files,
            ..TitleRecord::default()
        };
        add(&mut c, &r, 1);
        let strip = |u: &str| u.split_once("?token=").map(|(k, _)| k.to_owned());
        assert_eq!(rekey_all(&mut c, strip), 2500);
        let left: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM title_parts WHERE instr(url, '?') > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Titles and parts recorded under signed URLs move to their keys;
    /// a title of a key that exists is merged into it, its pin kept.
    #[test]
    fn signed_urls_move_to_their_keys() {
        let mut c = db();
        let part = |u: &str| {
            (
                u.to_owned(),
                "segment",
                "http://o/v/index.m3u8?token=a".to_owned(),
            )
        };
        let old = TitleRecord {
            url: "http://o/master.m3u8?token=a".into(),
            kind: "hls",
            playlists: vec!["http://o/v/index.m3u8?token=a".into()],
            files: vec![part("http://o/v/s0.ts?token=a"), part("http://o/v/s1.ts")],
            ..TitleRecord::default()
        };
        let old_id = add(&mut c, &old, 1);
        pin_title(&c, old_id, true).unwrap();
        // The same title recorded by its key since, with one part of its own.
        let new = TitleRecord {
            url: "http://o/master.m3u8".into(),
            kind: "hls",
            files: vec![(
                "http://o/v/s2.ts".into(),
                "segment",
                "http://o/v/index.m3u8".into(),
            )],
            ..TitleRecord::default()
        };
        let new_id = add(&mut c, &new, 2);
        let strip = |u: &str| u.split_once("?token=").map(|(k, _)| k.to_owned());
        assert_eq!(rekey_all(&mut c, strip), 4, "three parts and a title");
        let titles: Vec<(i64, String, bool)> = c
            .prepare("SELECT title_id, url, pinned FROM titles")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(titles, [(new_id, "http://o/master.m3u8".to_owned(), true)]);
        let parts: Vec<(String, i64, Option<String>)> = c
            .prepare("SELECT url, title_id, stream FROM title_parts ORDER BY url")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let v = Some("http://o/v/index.m3u8".to_owned());
        let m = Some("http://o/master.m3u8".to_owned());
        assert_eq!(
            parts,
            [
                ("http://o/master.m3u8".into(), new_id, m),
                ("http://o/v/index.m3u8".into(), new_id, v.clone()),
                ("http://o/v/s0.ts".into(), new_id, v.clone()),
                ("http://o/v/s1.ts".into(), new_id, v.clone()),
                ("http://o/v/s2.ts".into(), new_id, v),
            ]
        );
        assert_eq!(rekey_all(&mut c, strip), 0, "nothing left to move");
    }
}
