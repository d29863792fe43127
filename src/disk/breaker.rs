//! Whether the cache may be written now: the circuit breaker for failing
//! disks and the pause while the disk is full.
//!
//! A cache that cannot be written must never stop a stream; it must also
//! not hammer a broken disk with writes that fail, nor flood the log. So:
//! PERMISSION_DENIED and repeated IO failures open the breaker for a
//! cool-down, after which one test write probes the disk; a disk that stays
//! full after cleanup pauses writing until the disk monitor sees space
//! again. Every change of state is logged once.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::store::chunks::WriteClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Writing,
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
            Mode::PausedDiskFull => "paused: disk full".into(),
            Mode::PausedBreaker { class, .. } => format!("paused: {class} errors"),
        }
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive_failures: u32,
}

#[derive(Debug)]
pub struct Guard {
    state: Mutex<State>,
    threshold: u32,
    cool_down: Duration,
}

impl Guard {
    pub fn new(threshold: u32, cool_down: Duration) -> Guard {
        Guard {
            state: Mutex::new(State {
                mode: Mode::Writing,
                consecutive_failures: 0,
            }),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().unwrap().mode
    }

    pub fn is_writing(&self) -> bool {
        self.mode() == Mode::Writing
    }

    /// Whether a chunk may be written now. When the breaker's cool-down is
    /// over, a test write in `cache_dir` decides whether writing resumes.
    pub fn may_write(&self, cache_dir: &Path) -> bool {
        let until = match self.mode() {
            Mode::Writing => return true,
            Mode::PausedDiskFull => return false,
            Mode::PausedBreaker { until, .. } => until,
        };
        if Instant::now() < until {
            return false;
        }
        // One prober at a time: push the deadline out while probing.
        {
            let mut st = self.state.lock().unwrap();
            match st.mode {
                Mode::PausedBreaker { class, until: u } if u == until => {
                    st.mode = Mode::PausedBreaker {
                        class,
                        until: Instant::now() + self.cool_down,
                    };
                }
                _ => return st.mode == Mode::Writing,
            }
        }
        match probe(cache_dir) {
            Ok(()) => {
                self.set(Mode::Writing, "cache writes work again; caching resumed");
                true
            }
            Err(e) => {
                warn!(class = WriteClass::classify(&e).as_str(), error = %e, "cache probe write failed; caching stays paused");
                false
            }
        }
    }

    pub fn on_success(&self) {
        self.state.lock().unwrap().consecutive_failures = 0;
    }

    /// Records a failed write. PERMISSION_DENIED opens the breaker at once
    /// (retrying cannot help), IO after `threshold` failures in a row.
    pub fn on_failure(&self, class: WriteClass) {
        let open = {
            let mut st = self.state.lock().unwrap();
            st.consecutive_failures += 1;
            match class {
                WriteClass::PermissionDenied => true,
                WriteClass::Io => st.consecutive_failures >= self.threshold,
                WriteClass::DiskFull => false,
            }
        };
        if open && self.is_writing() {
            let mode = Mode::PausedBreaker {
                class,
                until: Instant::now() + self.cool_down,
            };
            self.set(
                mode,
                "cache writes keep failing; caching paused, streams go on uncached",
            );
        }
    }

    /// The disk is full and cleanup could not free space.
    pub fn pause_disk_full(&self) {
        if self.is_writing() {
            self.set(
                Mode::PausedDiskFull,
                "disk full and nothing left to clean up; caching paused, streams go on uncached",
            );
        }
    }

    /// The disk monitor saw space again.
    pub fn space_back(&self) {
        if self.mode() == Mode::PausedDiskFull {
            self.set(Mode::Writing, "disk space is back; caching resumed");
        }
    }

    fn set(&self, mode: Mode, why: &str) {
        let mut st = self.state.lock().unwrap();
        if st.mode == mode {
            return;
        }
        st.mode = mode;
        st.consecutive_failures = 0;
        drop(st);
        if mode == Mode::Writing {
            info!(state = %mode.describe(), "{why}");
        } else {
            warn!(state = %mode.describe(), "{why}");
        }
    }
}

/// A small write, sync and delete in the cache directory.
fn probe(cache_dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = cache_dir.join(".spool-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(b"spool write probe")?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_and_probes() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(3, Duration::from_millis(0));
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
        assert!(g.may_write(dir.path()));
        assert!(g.is_writing());

        g.on_failure(WriteClass::PermissionDenied);
        assert!(!g.is_writing(), "permission errors open it at once");
        // The probe fails in a directory that does not exist.
        assert!(!g.may_write(&dir.path().join("gone")));
        assert!(!g.is_writing());
    }

    #[test]
    fn cool_down_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(1, Duration::from_secs(3600));
        g.on_failure(WriteClass::Io);
        assert!(!g.may_write(dir.path()));
    }

    #[test]
    fn disk_full_pause() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(3, Duration::ZERO);
        g.on_failure(WriteClass::DiskFull);
        assert!(g.is_writing(), "disk full alone does not open the breaker");
        g.pause_disk_full();
        assert!(!g.may_write(dir.path()));
        g.space_back();
        assert!(g.may_write(dir.path()));
    }
}
