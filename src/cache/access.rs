//! When media and chunks were last read, batched: a response that read
//! cached chunks records them here in memory, and the upkeep writes what
//! gathered to the index in one transaction every disk check (and at
//! shutdown), so reading costs the index no write per request. Eviction
//! (least recently used first) and `--max-age` read these times.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::store::{unix_now, Index, MediaId};

/// Chunks recorded before a write is due whatever the interval: the
/// memory a burst of random reads can hold here stays small.
const MAX_PENDING: usize = 100_000;

/// Reads not written to the index yet. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Accesses {
    index: Index,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    chunks: HashMap<MediaId, BTreeSet<u64>>,
    count: usize,
    /// Bytes served of each media, and the responses that sent them.
    served: HashMap<MediaId, (u64, u64)>,
}

impl Accesses {
    pub fn new(index: Index) -> Accesses {
        Accesses {
            index,
            pending: Arc::default(),
        }
    }

    /// Records that `chunks` of `media` were read now; true when enough
    /// gathered that a write is due before the next interval.
    pub fn record(&self, media: MediaId, chunks: impl IntoIterator<Item = u64>) -> bool {
        let mut p = self.pending.lock().unwrap();
        let set = p.chunks.entry(media).or_default();
        let before = set.len();
        set.extend(chunks);
        let added = set.len() - before;
        p.count += added;
        p.count >= MAX_PENDING
    }

    /// Records that one response sent `bytes` of `media` (the history's
    /// most watched).
    pub fn served(&self, media: MediaId, bytes: u64) {
        let mut p = self.pending.lock().unwrap();
        let s = p.served.entry(media).or_default();
        s.0 += bytes;
        s.1 += 1;
    }

    /// Writes what gathered to the index, in one transaction; returns the
    /// chunks written. On failure what gathered is dropped (access times
    /// only order eviction; a failed write must not grow memory).
    pub async fn flush(&self) -> usize {
        let (batch, served): (Vec<(MediaId, Vec<u64>)>, Vec<_>) = {
            let mut p = self.pending.lock().unwrap();
            p.count = 0;
            let chunks = std::mem::take(&mut p.chunks)
                .into_iter()
                .map(|(m, c)| (m, c.into_iter().collect()))
                .collect();
            let served = std::mem::take(&mut p.served)
                .into_iter()
                .map(|(m, (bytes, streams))| (m, bytes, streams))
                .collect();
            (chunks, served)
        };
        if batch.is_empty() && served.is_empty() {
            return 0;
        }
        let n = batch.iter().map(|(_, c)| c.len()).sum();
        if let Err(e) = self.index.touch_many(batch, served, unix_now()).await {
            warn!(error = %e, chunks = n, "cannot record when chunks were read");
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkRow, MediaRow};

    /// Reads gather in memory and reach the index in one write.
    #[tokio::test]
    async fn reads_are_written_in_batches() {
        let index = Index::open_in_memory().unwrap();
        let (id, _) = index
            .replace_media(MediaRow::for_test(0, "http://a/x", 40, 10))
            .await
            .unwrap();
        for i in 0..4 {
            index
                .insert_chunk(id, ChunkRow::new(i, 10, 0))
                .await
                .unwrap();
        }
        index
            .call(move |c| c.execute("UPDATE chunks SET last_access_unix = 5", []))
            .await
            .unwrap();
        let a = Accesses::new(index.clone());
        assert!(!a.record(id, [0, 1]));
        assert!(!a.record(id, [1, 3]));
        let times = || {
            let index = index.clone();
            async move {
                index
                    .call(|c| {
                        let mut st =
                            c.prepare("SELECT last_access_unix FROM chunks ORDER BY chunk_index")?;
                        let v = st.query_map([], |r| r.get::<_, i64>(0))?;
                        v.collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .unwrap()
            }
        };
        assert_eq!(times().await, [5, 5, 5, 5], "nothing written while reading");
        a.served(id, 25);
        a.served(id, 5);
        assert_eq!(a.flush().await, 3);
        let served = index
            .call(move |c| {
                c.query_row("SELECT served_bytes, streams FROM media", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
            })
            .await
            .unwrap();
        assert_eq!(
            served,
            (30, 2),
            "bytes watched and streams, in the same write"
        );
        let t = times().await;
        assert!(t[0] > 5 && t[1] > 5 && t[2] == 5 && t[3] > 5, "{t:?}");
        assert_eq!(a.flush().await, 0, "nothing left");
    }
}
