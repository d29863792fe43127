//! Whether the cache may be written now: the circuit breaker for failing
//! disks and the pause while the disk is full.
//!
//! A cache that cannot be written must never stop a stream; it must also
//! not hammer a broken disk with writes that fail, nor flood the log. So:
//! PERMISSION_DENIED and repeated IO failures open the breaker for a
//! cool-down, after which one test write probes the disk; a disk that stays
//! full after cleanup pauses writing until the disk monitor sees space
//! again. Every change of state is logged once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::class::WriteClass;
use crate::history::{Event, Kind};
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Writing,
    /// Held paused on request (the control plane's `POST
    /// /api/caching/pause`): until released. Only `release` ends it.
    Held,
    /// Disk full and cleanup could not help: until the monitor sees space.
    PausedDiskFull,
    /// Breaker open after failures of this class: until `until`, then a
    /// probe write decides.
    PausedBreaker {
        class: WriteClass,
        until: Instant,
    },
}

impl Mode {
    pub fn describe(&self) -> String {
        match self {
            Mode::Writing => "writing".into(),
            Mode::Held => "paused: on request".into(),
            Mode::PausedDiskFull => "paused: disk full".into(),
            Mode::PausedBreaker { class, .. } => format!("paused: {class} errors"),
        }
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive_failures: u32,
    /// A DISK_FULL was logged and counted since caching last resumed.
    disk_full_told: bool,
}

/// May the cache be written now? Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Where the probe write goes.
    dir: PathBuf,
    threshold: u32,
    cool_down: Duration,
    metrics: Arc<Metrics>,
}

impl Breaker {
    pub fn new(dir: &Path, threshold: u32, cool_down: Duration, metrics: Arc<Metrics>) -> Breaker {
        Breaker {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    mode: Mode::Writing,
                    consecutive_failures: 0,
                    disk_full_told: false,
                }),
                dir: dir.to_owned(),
                threshold: threshold.max(1),
                cool_down,
                metrics,
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.state.lock().unwrap().mode
    }

    pub fn is_writing(&self) -> bool {
        self.mode() == Mode::Writing
    }

    /// Whether a chunk may be written now. When the breaker's cool-down is
    /// over, a test write in the cache directory decides whether writing
    /// resumes.
    pub async fn may_write(&self) -> bool {
        let until = match self.mode() {
            Mode::Writing => return true,
            Mode::PausedDiskFull | Mode::Held => return false,
            Mode::PausedBreaker { until, .. } => until,
        };
        if Instant::now() < until {
            return false;
        }
        // One prober at a time: push the deadline out while probing.
        {
            let mut st = self.inner.state.lock().unwrap();
            match st.mode {
                Mode::PausedBreaker { class, until: u } if u == until => {
                    st.mode = Mode::PausedBreaker {
                        class,
                        until: Instant::now() + self.inner.cool_down,
                    };
                }
                _ => return st.mode == Mode::Writing,
            }
        }
        let dir = self.inner.dir.clone();
        let probed = tokio::task::spawn_blocking(move || probe(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match probed {
            // An admin's pause during the probe stays.
            Ok(()) => {
                self.transition(
                    |m| matches!(m, Mode::PausedBreaker { .. }),
                    Mode::Writing,
                    "cache writes work again; caching resumed",
                );
                self.is_writing()
            }
            Err(e) => {
                warn!(class = WriteClass::classify(&e).as_str(), error = %e, "cache probe write failed; caching stays paused");
                false
            }
        }
    }

    /// A write worked: a later full disk is a new episode, named again.
    pub fn on_success(&self) {
        let mut st = self.inner.state.lock().unwrap();
        st.consecutive_failures = 0;
        st.disk_full_told = false;
    }

    /// Records a failed write. PERMISSION_DENIED opens the breaker at once
    /// (retrying cannot help), IO after `threshold` failures in a row.
    /// Counts a failed write in `spool_cache_write_errors_total{class}`
    /// (the caller logs it).
    pub fn count(&self, class: WriteClass) {
        if class == WriteClass::DiskFull {
            self.inner.state.lock().unwrap().disk_full_told = true;
        }
        self.inner.metrics.write_error(class.as_str());
    }

    /// Records a failed write (counted with `count`) for the breaker.
    pub fn on_failure(&self, class: WriteClass) {
        let open = {
            let mut st = self.inner.state.lock().unwrap();
            st.consecutive_failures += 1;
            match class {
                WriteClass::PermissionDenied => true,
                WriteClass::Io => st.consecutive_failures >= self.inner.threshold,
                WriteClass::DiskFull => false,
            }
        };
        if open {
            let mode = Mode::PausedBreaker {
                class,
                until: Instant::now() + self.inner.cool_down,
            };
            self.transition(
                |m| m == Mode::Writing,
                mode,
                "cache writes keep failing; caching paused, streams go on uncached",
            );
        }
    }

    /// The disk is full and cleanup could not free space. When no failed
    /// write said so in this episode (the free-space check before a write,
    /// the monitor), the class is named here: once per episode, in the log
    /// and in `spool_cache_write_errors_total{class="DISK_FULL"}`.
    pub fn pause_disk_full(&self, free_bytes: u64) {
        let tell = {
            let mut st = self.inner.state.lock().unwrap();
            !std::mem::replace(&mut st.disk_full_told, true)
        };
        if tell {
            let class = WriteClass::DiskFull;
            warn!(class = %class.as_str(), free_bytes, "cache disk is full");
            self.inner.metrics.write_error(class.as_str());
        }
        self.transition(
            |m| m == Mode::Writing,
            Mode::PausedDiskFull,
            "disk full and nothing left to clean up; caching paused, streams go on uncached",
        );
    }

    /// The disk monitor saw space again.
    pub fn space_back(&self) {
        self.transition(
            |m| m == Mode::PausedDiskFull,
            Mode::Writing,
            "disk space is back; caching resumed",
        );
    }

    /// Holds caching paused on request: streams go on uncached until
    /// `release`. Returns false when it already was held.
    pub fn hold(&self) -> bool {
        self.transition(
            |m| m != Mode::Held,
            Mode::Held,
            "caching held paused on request",
        )
    }

    /// Releases a hold. A disk that is still full or failing says so again
    /// at the next write (and pauses again). Returns false when caching was
    /// not held.
    pub fn release(&self) -> bool {
        self.transition(
            |m| m == Mode::Held,
            Mode::Writing,
            "caching released from a hold",
        )
    }

    /// Moves to `mode` if the mode now is one `from` accepts: the check and
    /// the change under one lock, so that two transitions never interleave
    /// (the monitor's "space is back" cannot undo an admin's pause that
    /// came between its look and its change). Returns whether it moved.
    fn transition(&self, from: impl FnOnce(Mode) -> bool, mode: Mode, why: &str) -> bool {
        let mut st = self.inner.state.lock().unwrap();
        if st.mode == mode || !from(st.mode) {
            return false;
        }
        st.mode = mode;
        st.consecutive_failures = 0;
        if mode == Mode::Writing {
            st.disk_full_told = false;
        }
        drop(st);
        let now = crate::history::now_unix();
        let event = if mode == Mode::Writing {
            info!(state = %mode.describe(), "{why}");
            Event::new(Kind::CachingResumed, now)
        } else {
            warn!(state = %mode.describe(), "{why}");
            Event::new(Kind::CachingPaused, now)
        };
        self.inner
            .metrics
            .history
            .record(event.reason(mode.describe()));
        true
    }
}

/// A small write, sync and delete in the cache directory (a symlink in
/// the probe's place is not followed).
fn probe(cache_dir: &Path) -> std::io::Result<()> {
    use super::beneath;
    use std::io::Write;
    let dir = beneath::Beneath::new(cache_dir).dir(&[], false)?;
    let name = ".spool-probe";
    let _ = beneath::remove(&dir, name);
    let result = (|| {
        let mut f = beneath::create_new(&dir, name)?;
        f.write_all(b"spool write probe")?;
        f.sync_all()
    })();
    let _ = beneath::remove(&dir, name);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(dir: &Path, threshold: u32, cool_down: Duration) -> Breaker {
        Breaker::new(dir, threshold, cool_down, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn breaker_opens_and_probes() {
        let dir = tempfile::tempdir().unwrap();
        let g = breaker(dir.path(), 3, Duration::from_millis(0));
        g.on_failure(WriteClass::Io);
        g.on_failure(WriteClass::Io);
        assert!(g.is_writing(), "below the threshold");
        g.on_success();
        g.on_failure(WriteClass::Io);
        g.on_failure(WriteClass::Io);
        assert!(g.is_writing(), "a success resets the count");
        g.on_failure(WriteClass::Io);
        assert!(matches!(
            g.mode(),
            Mode::PausedBreaker {
                class: WriteClass::Io,
                ..
            }
        ));
        // Cool-down over, the probe write works: writing again.
        assert!(g.may_write().await);
        assert!(g.is_writing());

        g.on_failure(WriteClass::PermissionDenied);
        assert!(!g.is_writing(), "permission errors open it at once");
        // The probe fails in a directory that does not exist.
        let gone = breaker(&dir.path().join("gone"), 1, Duration::ZERO);
        gone.on_failure(WriteClass::PermissionDenied);
        assert!(!gone.may_write().await);
        assert!(!gone.is_writing());
    }

    /// The cool-down runs on tokio's clock, so a paused clock tests it.
    #[tokio::test(start_paused = true)]
    async fn cool_down_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let g = breaker(dir.path(), 1, Duration::from_secs(3600));
        g.on_failure(WriteClass::Io);
        assert!(!g.may_write().await);
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(!g.may_write().await, "still cooling down");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(g.may_write().await, "cool-down over, the probe works");
    }

    /// A hold lasts until released: no write, no probe, and no
    /// other state (space back) ends it.
    #[tokio::test]
    async fn a_hold_lasts_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let g = breaker(dir.path(), 1, Duration::ZERO);
        assert!(!g.release(), "nothing to resume");
        assert!(g.hold());
        assert!(!g.hold(), "already paused");
        assert_eq!(g.mode().describe(), "paused: on request");
        assert!(!g.may_write().await);
        g.space_back();
        g.on_failure(WriteClass::PermissionDenied);
        assert_eq!(g.mode(), Mode::Held);
        assert!(g.release());
        assert!(g.may_write().await);
        assert!(g.is_writing());
    }

    /// The monitor's "space is back" and an admin's pause, at the same
    /// moment from two threads, many times: whenever the pause was
    /// answered as a change, it is what stays.
    #[test]
    fn a_hold_is_never_undone_by_the_monitor() {
        let dir = tempfile::tempdir().unwrap();
        let g = breaker(dir.path(), 3, Duration::ZERO);
        for _ in 0..2000 {
            g.release();
            g.pause_disk_full(0);
            assert_eq!(g.mode(), Mode::PausedDiskFull);
            let start = Arc::new(std::sync::Barrier::new(2));
            let monitor = {
                let (g, start) = (g.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    g.space_back();
                })
            };
            start.wait();
            let changed = g.hold();
            monitor.join().unwrap();
            assert!(changed, "it was not paused by an admin before");
            assert_eq!(g.mode(), Mode::Held);
        }
    }

    #[tokio::test]
    async fn disk_full_pause_names_its_class_once_per_episode() {
        let dir = tempfile::tempdir().unwrap();
        let g = breaker(dir.path(), 3, Duration::ZERO);
        let told = |g: &Breaker| {
            g.inner
                .metrics
                .encode()
                .lines()
                .find(|l| l.starts_with("spool_cache_write_errors_total{class=\"DISK_FULL\"}"))
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        g.count(WriteClass::DiskFull);
        g.on_failure(WriteClass::DiskFull);
        assert!(g.is_writing(), "disk full alone does not open the breaker");
        // That failed write was counted; pausing does not count again.
        g.pause_disk_full(0);
        assert!(!g.may_write().await);
        assert_eq!(told(&g).as_deref(), Some("1"));
        g.space_back();
        assert!(g.may_write().await);
        // A pause with no failed write (the check before writing) names it.
        g.pause_disk_full(0);
        g.pause_disk_full(0);
        assert_eq!(told(&g).as_deref(), Some("2"));
        g.space_back();
        g.pause_disk_full(0);
        assert_eq!(told(&g).as_deref(), Some("3"), "a new episode");
    }
}
