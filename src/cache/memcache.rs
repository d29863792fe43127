//! A bounded in-memory home for complete chunks that could not be written
//! to disk (caching paused, a failed write), so that a player's re-reads
//! and short seeks back do not all go to the origin.
//!
//! A chunk here stays in its media's slot as a complete download; leaving
//! this cache (least recently used first, when over `--memory-cache`)
//! releases the slot, and the next player fetches it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::inflight::InFlight;
use super::media::{Instance, Media};

struct Entry {
    media: Weak<Media>,
    chunk: Arc<InFlight>,
    last_use: u64,
}

#[derive(Default)]
struct State {
    /// Keyed by media instance (a media the index could not record has no
    /// id) and chunk index.
    entries: HashMap<(Instance, u64), Entry>,
    bytes: u64,
    tick: u64,
}

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct MemCache {
    limit: u64,
    state: Arc<Mutex<State>>,
}

impl MemCache {
    pub fn new(limit: u64) -> MemCache {
        MemCache {
            limit,
            state: Arc::default(),
        }
    }

    /// Keeps a complete chunk; returns false (and keeps nothing) when it
    /// does not fit at all.
    pub fn insert(&self, media: &Arc<Media>, index: u64, chunk: Arc<InFlight>) -> bool {
        let len = chunk.len();
        if len > self.limit {
            return false;
        }
        let mut evicted = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            st.tick += 1;
            let tick = st.tick;
            let old = st.entries.insert(
                (media.instance(), index),
                Entry {
                    media: Arc::downgrade(media),
                    chunk,
                    last_use: tick,
                },
            );
            st.bytes += len;
            if let Some(old) = old {
                st.bytes -= old.chunk.len();
            }
            while st.bytes > self.limit {
                let Some(key) = st
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                let e = st.entries.remove(&key).expect("present");
                st.bytes -= e.chunk.len();
                evicted.push((key.1, e));
            }
        }
        // Slots are released outside this cache's lock.
        for (index, e) in evicted {
            if let Some(m) = e.media.upgrade() {
                m.release(index, &e.chunk);
            }
        }
        true
    }

    /// Marks a chunk as just used.
    pub fn touch(&self, media: &Arc<Media>, index: u64) {
        let mut st = self.state.lock().unwrap();
        st.tick += 1;
        let tick = st.tick;
        if let Some(e) = st.entries.get_mut(&(media.instance(), index)) {
            e.last_use = tick;
        }
    }

    /// Takes a chunk out (its slot stays pending), e.g. to write it now
    /// that caching works again.
    pub fn take(&self, media: &Arc<Media>, index: u64) -> Option<Arc<InFlight>> {
        let mut st = self.state.lock().unwrap();
        let e = st.entries.remove(&(media.instance(), index))?;
        st.bytes -= e.chunk.len();
        Some(e.chunk)
    }

    /// Takes out every chunk that could be written now: of a media still
    /// in use, recorded in the index and not dropped.
    pub fn drain_writable(&self) -> Vec<(Arc<Media>, u64, Arc<InFlight>)> {
        let mut st = self.state.lock().unwrap();
        let keys: Vec<_> = st
            .entries
            .iter()
            .filter(|(_, e)| {
                e.media
                    .upgrade()
                    .is_some_and(|m| m.id().is_some() && !m.is_gone())
            })
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let e = st.entries.remove(&key).expect("present");
            st.bytes -= e.chunk.len();
            if let Some(m) = e.media.upgrade() {
                out.push((m, key.1, e.chunk));
            }
        }
        out
    }

    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::media::Slot;
    use crate::store::index::MediaRow;

    #[test]
    fn least_recently_used_goes_first() {
        let row = MediaRow::for_test(1, "http://x/u", 100, 10);
        let url = Arc::new(url::Url::parse(&row.url).unwrap());
        let media = Arc::new(Media::new(url, row, vec![]));
        let cache = MemCache::new(25);
        let feed = crate::cache::inflight::Transfer::new(0, 0);
        let claim = |i| media.claim(i, i, 0, &feed, None).pop().unwrap().1;
        let (a, b, c) = (claim(0), claim(1), claim(2));
        assert!(cache.insert(&media, 0, a));
        assert!(cache.insert(&media, 1, b));
        cache.touch(&media, 0); // 1 is now the least recently used
        assert!(cache.insert(&media, 2, c));
        assert_eq!(cache.bytes(), 20);
        assert!(matches!(media.slot(0), Some(Slot::Pending(_))));
        assert!(media.slot(1).is_none(), "evicted chunk's slot released");
        assert!(matches!(media.slot(2), Some(Slot::Pending(_))));
        assert!(!cache.insert(&media, 3, Arc::new(InFlight::new(30))));
    }
}
