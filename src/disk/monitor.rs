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
    /// Why the last measurement failed; None when it worked. A failure
    /// is "unknown", never "empty": callers fall back on the last good
    /// sample (`space_or_last`), and it is logged once per episode.
    failing: Mutex<Option<String>>,
    /// Test builds: make measurements fail (NFS or FUSE answering EIO).
    #[cfg(any(test, feature = "testing"))]
    fail: std::sync::atomic::AtomicBool,
}

impl Disk {
    pub fn new(dir: &Path, thresholds: Thresholds) -> Disk {
        Disk {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                thresholds,
                last: Mutex::new(None),
                failing: Mutex::new(None),
                #[cfg(any(test, feature = "testing"))]
                fail: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Free space now, measured off the async worker threads. A failure
    /// is logged once per episode, and its end too.
    pub async fn space(&self) -> std::io::Result<Space> {
        let dir = self.inner.dir.clone();
        #[cfg(any(test, feature = "testing"))]
        if self.inner.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return self.note(Err(std::io::Error::from_raw_os_error(5)));
        }
        let measured = tokio::task::spawn_blocking(move || super::space::space(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.note(measured)
    }

    fn note(&self, measured: std::io::Result<Space>) -> std::io::Result<Space> {
        let mut failing = self.inner.failing.lock().unwrap();
        match (&measured, failing.is_some()) {
            (Err(e), false) => {
                tracing::warn!(error = %e, "cannot measure the cache filesystem's free space; acting on the last good sample");
                *failing = Some(e.to_string());
            }
            (Ok(_), true) => {
                tracing::info!("the cache filesystem's free space can be measured again");
                *failing = None;
            }
            _ => {}
        }
        measured
    }

    /// Free space now, or else the last good sample (None when there never
    /// was one): what a cleanup may act on when a measurement fails.
    pub async fn space_or_last(&self) -> Option<Space> {
        match self.space().await {
            Ok(s) => Some(s),
            Err(_) => self.last().map(|l| l.0),
        }
    }

    /// Why free space cannot be measured now, if it cannot.
    pub fn measure_error(&self) -> Option<String> {
        self.inner.failing.lock().unwrap().clone()
    }

    /// Test builds: make every measurement fail from now on (or work again).
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_measurements(&self, fail: bool) {
        self.inner
            .fail
            .store(fail, std::sync::atomic::Ordering::Relaxed);
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
