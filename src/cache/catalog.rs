//! The media open in this process, by URL and by index id, and which of
//! their chunks players need (what eviction must leave alone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::gates::Gates;
use super::media::{Media, Slot};
use super::readahead::Policy;
use crate::store::{MediaId, Pin, Pins};

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Catalog {
    inner: Arc<Inner>,
    /// One opener per URL at a time, so concurrent cold players share one
    /// origin request.
    pub opening: Gates,
}

struct Inner {
    media: Mutex<HashMap<String, Arc<Media>>>,
    /// The read-ahead policy: eviction keeps what open streams' windows
    /// hold.
    policy: Policy,
}

impl Catalog {
    pub fn new(policy: Policy) -> Catalog {
        Catalog {
            inner: Arc::new(Inner {
                media: Mutex::default(),
                policy,
            }),
            opening: Gates::default(),
        }
    }

    /// The media version with this id, if it is open.
    pub fn by_id(&self, media_id: MediaId) -> Option<Arc<Media>> {
        let map = self.inner.media.lock().unwrap();
        map.values().find(|m| m.id() == Some(media_id)).cloned()
    }

    /// The index ids of the media open in this process.
    pub fn open_ids(&self) -> Vec<MediaId> {
        let map = self.inner.media.lock().unwrap();
        map.values().filter_map(|m| m.id()).collect()
    }

    /// The index ids of the media a player reads now.
    pub fn playing_ids(&self) -> Vec<MediaId> {
        let map = self.inner.media.lock().unwrap();
        map.values()
            .filter(|m| !m.live_playheads().is_empty())
            .filter_map(|m| m.id())
            .collect()
    }

    /// Every media open in this process.
    pub fn all(&self) -> Vec<Arc<Media>> {
        let map = self.inner.media.lock().unwrap();
        map.values().filter(|m| !m.is_gone()).cloned().collect()
    }

    pub fn contains(&self, url: &str) -> bool {
        self.get(url).is_some()
    }

    /// The open media of a URL; a version dropped because its origin copy
    /// changed is forgotten here.
    pub fn get(&self, url: &str) -> Option<Arc<Media>> {
        let mut map = self.inner.media.lock().unwrap();
        let m = map.get(url).cloned()?;
        if m.is_gone() {
            map.remove(url);
            return None;
        }
        Some(m)
    }

    /// Like `get`, for a player: marks the media used.
    pub fn used(&self, url: &str) -> Option<Arc<Media>> {
        let m = self.get(url)?;
        m.mark_used();
        Some(m)
    }

    pub fn insert(&self, media: &Arc<Media>) {
        self.inner
            .media
            .lock()
            .unwrap()
            .insert(media.row.url.clone(), media.clone());
    }

    /// Forgets a media version, if it is still the one open for its URL.
    pub fn remove(&self, media: &Arc<Media>) {
        let mut map = self.inner.media.lock().unwrap();
        if map
            .get(&media.row.url)
            .is_some_and(|m| Arc::ptr_eq(m, media))
        {
            map.remove(&media.row.url);
        }
    }

    /// Forgets media nobody used for `idle` (their rows and files stay; the
    /// next player loads them from the index again), so memory does not
    /// grow with every URL ever played.
    pub fn sweep(&self, idle: Duration) -> usize {
        let mut map = self.inner.media.lock().unwrap();
        let before = map.len();
        map.retain(|_, m| !m.is_gone() && !m.is_idle(idle));
        before - map.len()
    }

    /// Whether a chunk must not be evicted: it is downloading, or in the
    /// read-ahead window of a stream open now (the same window runs fetch).
    pub fn is_needed(&self, media_id: MediaId, index: u64) -> bool {
        self.by_id(media_id).is_some_and(|m| {
            matches!(m.slot(index), Some(Slot::Pending(_)))
                || m.keeps(index, &m.window(&self.inner.policy))
        })
    }
}

impl Pins for Catalog {
    fn pin(&self, media_id: MediaId, chunk: u64) -> Pin {
        if self.is_needed(media_id, chunk) {
            return Pin::Keep;
        }
        let Some(m) = self.by_id(media_id) else {
            return Pin::Evict(None);
        };
        // While its row and file go, the slot holds a placeholder, so no
        // player downloads the chunk again into the same file name.
        match m.retire_cached(chunk) {
            Some(retired) => Pin::Evict(Some(Box::new(move || drop(retired)))),
            // Downloading again already: its row is not ours to drop.
            None if m.slot(chunk).is_some() => Pin::Keep,
            None => Pin::Evict(None),
        }
    }
}
