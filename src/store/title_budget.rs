//! How many parts (URLs) the titles of the index may name
//! (`titles.rs`): a playlist is its origin's word, and a hostile one names
//! as many URLs as it likes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Most parts (URLs) all titles together may name: about 100 bytes each
/// in the index. A playlist is its origin's word, and a hostile one
/// names as many URLs as it likes.
pub(crate) const MAX_PARTS: u64 = 1_000_000;

/// Most parts one title may name (a four-hour title in twelve renditions
/// of two-second segments names about 86,000).
pub(crate) const MAX_TITLE_PARTS: u64 = 200_000;

/// How long a count that found the parts at their limit with nothing left
/// to forget is believed before counting again.
const FULL_FOR: Duration = Duration::from_secs(60);

/// How many parts may still be recorded. Counted once, then kept up to
/// date by what is recorded (so it only ever counts too many); at the
/// limit, counted again, and the titles with nothing cached reached
/// longest ago are forgotten to make room, down to nine tenths of it.
#[derive(Debug)]
pub(crate) struct PartBudget {
    limit: u64,
    state: Mutex<Budget>,
}

#[derive(Debug, Default)]
struct Budget {
    known: Option<u64>,
    full_at: Option<Instant>,
}

impl Default for PartBudget {
    fn default() -> PartBudget {
        PartBudget::new(MAX_PARTS)
    }
}

impl PartBudget {
    pub fn new(limit: u64) -> PartBudget {
        PartBudget {
            limit: limit.max(10),
            state: Mutex::default(),
        }
    }

    /// Parts that may be added now, making room first when there is none
    /// (never by forgetting the title `keep` belongs to).
    pub(super) fn room(&self, c: &Connection, keep: &str) -> rusqlite::Result<u64> {
        let mut st = self.state.lock().unwrap();
        if let Some(n) = st.known.filter(|n| *n < self.limit) {
            return Ok(self.limit - n);
        }
        if st.full_at.is_some_and(|t| t.elapsed() < FULL_FOR) {
            return Ok(0);
        }
        let mut n = count_parts(c)?;
        if n >= self.limit {
            let target = self.limit - self.limit / 10;
            if forget_idle(c, n + 1 - target, keep)? > 0 {
                n = count_parts(c)?;
            }
        }
        st.known = Some(n);
        st.full_at = (n >= self.limit).then(Instant::now);
        Ok(self.limit.saturating_sub(n))
    }

    /// Counts again next time.
    pub(super) fn unknown(&self) {
        let mut st = self.state.lock().unwrap();
        st.known = None;
        st.full_at = None;
    }

    pub(super) fn added(&self, n: u64) {
        if let Some(k) = self.state.lock().unwrap().known.as_mut() {
            *k += n;
        }
    }
}

pub(super) fn count_parts(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM title_parts")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
}

/// Forgets unpinned titles with no byte cached, those reached longest ago
/// first, until at least `needed` parts went; returns how many went.
fn forget_idle(c: &Connection, needed: u64, keep: &str) -> rusqlite::Result<u64> {
    let mut ids = Vec::new();
    let mut freed = 0u64;
    {
        let mut st = c.prepare_cached(
            "SELECT t.title_id, (SELECT COUNT(*) FROM title_parts p WHERE p.title_id = t.title_id)
               FROM titles t WHERE t.pinned = 0
                AND NOT EXISTS (SELECT 1 FROM title_parts p JOIN media m ON m.url = p.url
                                JOIN chunks k ON k.media_id = m.media_id
                                WHERE p.title_id = t.title_id)
                AND t.title_id NOT IN (SELECT title_id FROM title_parts WHERE url = ?1)
              ORDER BY t.last_access_unix, t.title_id",
        )?;
        let mut rows = st.query([keep])?;
        while freed < needed {
            let Some(row) = rows.next()? else { break };
            ids.push(row.get::<_, i64>(0)?);
            freed += row.get::<_, i64>(1)?.max(0) as u64;
        }
    }
    let mut del = c.prepare_cached("DELETE FROM titles WHERE title_id = ?1")?;
    for id in ids {
        del.execute([id])?;
    }
    Ok(freed)
}
