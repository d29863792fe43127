//! A bounded in-memory home for complete chunks that could not be written
//! to disk (caching paused, a failed write), so that a player's re-reads
//! and short seeks back do not all go to the origin.
//!
//! A chunk here stays in its media's slot as a complete download; leaving
//! this cache (least recently used first, when over `--memory-cache`)
//! releases the slot, and the next player fetches it again.

use std::sync::{Arc, Mutex, Weak};

use super::inflight::InFlight;
use super::lru::Lru;
use super::media::{Instance, Media};

struct Entry {
    media: Weak<Media>,
    chunk: Arc<InFlight>,
}

/// Keyed by media instance (a media the index could not record has no
/// id) and chunk index.
type Key = (Instance, u64);

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct MemCache {
    limit: u64,
    entries: Arc<Mutex<Lru<Key, Entry>>>,
}

impl MemCache {
    pub fn new(limit: u64) -> MemCache {
        MemCache {
            limit,
            entries: Arc::new(Mutex::new(Lru::new(limit))),
        }
    }

    /// Keeps a complete chunk; returns false (and keeps nothing) when it
    /// does not fit at all.
    pub fn insert(&self, media: &Arc<Media>, index: u64, chunk: Arc<InFlight>) -> bool {
        let len = chunk.len();
        if len > self.limit {
            return false;
        }
        let entry = Entry {
            media: Arc::downgrade(media),
            chunk,
        };
        let (_, evicted) =
            self.entries
                .lock()
                .unwrap()
                .insert((media.instance(), index), entry, len);
        // Slots are released outside this cache's lock.
        for ((_, index), e) in evicted {
            if let Some(m) = e.media.upgrade() {
                m.release(index, &e.chunk);
            }
        }
        true
    }

    /// Marks a chunk as just used.
    pub fn touch(&self, media: &Arc<Media>, index: u64) {
        self.entries.lock().unwrap().get(&(media.instance(), index));
    }

    /// Takes a chunk out (its slot stays pending), e.g. to write it now
    /// that caching works again.
    pub fn take(&self, media: &Arc<Media>, index: u64) -> Option<Arc<InFlight>> {
        let mut entries = self.entries.lock().unwrap();
        entries.remove(&(media.instance(), index)).map(|e| e.chunk)
    }

    /// Takes out every chunk that could be written now: of a media still
    /// in use, recorded in the index and not dropped.
    pub fn drain_writable(&self) -> Vec<(Arc<Media>, u64, Arc<InFlight>)> {
        let taken = self.entries.lock().unwrap().remove_where(|_, e| {
            e.media
                .upgrade()
                .is_some_and(|m| m.id().is_some() && !m.is_gone())
        });
        taken
            .into_iter()
            .filter_map(|((_, index), e)| Some((e.media.upgrade()?, index, e.chunk)))
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        self.entries.lock().unwrap().cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::media::Slot;
    use crate::store::MediaRow;

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
