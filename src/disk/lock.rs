//! One server per cache directory.
//!
//! Two processes writing the same chunk files and index would each trust
//! files the other is changing, and `spool verify --repair` would delete a
//! running server's temp files and chunks it has not indexed yet. So a
//! server holds an advisory lock (`flock`, exclusive) on
//! `<cache-dir>/spool.lock` for as long as it serves; a second server and
//! `verify --repair` on a held cache refuse with a clear message. The
//! kernel releases the lock when the process ends, `kill -9` included, so
//! a stale lock file never blocks a restart.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::FlockOperation;

use super::beneath::{self, Beneath};

/// The lock file's name in the cache directory.
pub const LOCK_FILE: &str = "spool.lock";

/// The cache directory held by this process, until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// Why a cache directory could not be held.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another spool process holds the cache directory {0} (its {LOCK_FILE}): one server per \
         cache directory; stop it, or give this one another --cache-dir"
    )]
    Held(String),
    #[error("cannot lock the cache directory {0}: {1}")]
    Io(String, io::Error),
}

impl CacheLock {
    /// Holds `dir` for this process, or says who holds it. Blocking.
    pub fn acquire(dir: &Path) -> Result<CacheLock, LockError> {
        let shown = || dir.display().to_string();
        let fd = Beneath::new(dir)
            .dir(&[], false)
            .and_then(|d| beneath::open_or_create(&d, LOCK_FILE))
            .map_err(|e| LockError::Io(shown(), e))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(CacheLock { _file: fd }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held(shown())),
            Err(e) => Err(LockError::Io(shown(), e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = CacheLock::acquire(dir.path()).unwrap();
        // A second open of the same file (as another process would) is
        // refused while the first holds it, and succeeds once it is gone.
        let again = CacheLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(again, LockError::Held(_)), "{again}");
        assert!(again.to_string().contains("one server per cache directory"));
        drop(held);
        CacheLock::acquire(dir.path()).unwrap();
        // A symlink in the lock file's place is not followed.
        let other = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path().join("x"), d2.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(
            CacheLock::acquire(d2.path()),
            Err(LockError::Io(..))
        ));
        assert!(!other.path().join("x").exists());
    }
}
