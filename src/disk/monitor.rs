//! The disk monitor's handle: the cache filesystem's thresholds and its
//! last sampled free space and level.
//!
//! Sampling is all this layer does; acting on a level (cleaning up,
//! pausing or resuming caching) is the cache's upkeep, which knows what
//! may be evicted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::space::{Level, Space};

/// When free space counts as critical, and how much a cleanup frees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub min_free_percent: f64,
    pub min_free_bytes: u64,
    /// A cleanup frees space up to the critical threshold plus this.
    pub cleanup_headroom: u64,
}

/// The cache filesystem: where it is, its thresholds, its last sample.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    thresholds: Thresholds,
    last: Mutex<Option<(Space, Level)>>,
}

impl Disk {
    pub fn new(dir: &Path, thresholds: Thresholds) -> Disk {
        Disk {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                thresholds,
                last: Mutex::new(None),
            }),
        }
    }

    /// Free space now, measured off the async worker threads.
    pub async fn space(&self) -> std::io::Result<Space> {
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || super::space::space(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// The level of a sample against the thresholds.
    pub fn level(&self, space: Space) -> Level {
        let t = &self.inner.thresholds;
        Level::of(space, t.min_free_percent, t.min_free_bytes)
    }

    /// The critical threshold in bytes for a filesystem of this size.
    pub fn critical_bytes(&self, space: Space) -> u64 {
        let t = &self.inner.thresholds;
        let by_percent = (space.total_bytes as f64 * t.min_free_percent / 100.0) as u64;
        by_percent.max(t.min_free_bytes)
    }

    /// Whether `len` more bytes fit above the critical threshold: the test
    /// a chunk write makes, and the one that resumes a paused cache.
    pub fn has_room(&self, space: Space, len: u64) -> bool {
        space.free_bytes >= self.critical_bytes(space).saturating_add(len)
    }

    /// Free space that a cleanup aims for.
    pub fn cleanup_target(&self, space: Space) -> u64 {
        self.critical_bytes(space)
            .saturating_add(self.inner.thresholds.cleanup_headroom)
    }

    pub fn record(&self, space: Space, level: Level) {
        *self.inner.last.lock().unwrap() = Some((space, level));
    }

    /// The last sample, if any.
    pub fn last(&self) -> Option<(Space, Level)> {
        *self.inner.last.lock().unwrap()
    }
}
