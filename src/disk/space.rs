//! Free space of the filesystem that holds the cache.
//!
//! Measured with statvfs on the cache directory itself, which is what `df`
//! reports for that path, whatever the mount (tmpfs, bind mounts inside a
//! container, overlay): no guessing which disk a path lives on.

use std::io;
use std::path::Path;

/// Space on one filesystem, as `df` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    /// Available to unprivileged users (df's "Avail").
    pub free_bytes: u64,
}

impl Space {
    pub fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.free_bytes as f64 * 100.0 / self.total_bytes as f64
    }
}

/// statvfs on `path`. Blocking (a quick syscall, but it may wait on a
/// busy or remote filesystem): async callers use `Disk::space`.
pub fn space(path: &Path) -> io::Result<Space> {
    super::blocking::blocking_call();
    let st = rustix::fs::statvfs(path)?;
    Ok(Space {
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// How worried to be about free space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Level {
    Healthy,
    Info,
    Warning,
    Critical,
}

impl Level {
    /// Critical below `min_percent` or `min_bytes` free; Warning below twice
    /// those, Info below four times.
    pub(crate) fn of(space: Space, min_percent: f64, min_bytes: u64) -> Level {
        let below = |factor: u64| {
            space.free_percent() < min_percent * factor as f64
                || space.free_bytes < min_bytes.saturating_mul(factor)
        };
        if below(1) {
            Level::Critical
        } else if below(2) {
            Level::Warning
        } else if below(4) {
            Level::Info
        } else {
            Level::Healthy
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "healthy",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let gib = 1u64 << 30;
        let s = |free, total| Space {
            total_bytes: total,
            free_bytes: free,
        };
        assert_eq!(Level::of(s(50 * gib, 100 * gib), 5.0, gib), Level::Healthy);
        assert_eq!(Level::of(s(15 * gib, 100 * gib), 5.0, gib), Level::Info);
        assert_eq!(Level::of(s(8 * gib, 100 * gib), 5.0, gib), Level::Warning);
        assert_eq!(Level::of(s(4 * gib, 100 * gib), 5.0, gib), Level::Critical);
        // A small disk: the byte threshold rules.
        assert_eq!(Level::of(s(gib / 2, 2 * gib), 5.0, gib), Level::Critical);
        assert_eq!(Level::of(s(0, 0), 5.0, gib), Level::Critical);
    }

    #[test]
    fn agrees_with_df() {
        let dir = std::env::temp_dir();
        let ours = space(&dir).unwrap();
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=size,avail"])
            .arg(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let nums: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(ours.total_bytes, nums[0]);
        // Free space moves while tests write; allow 64 MiB of drift.
        assert!(
            ours.free_bytes.abs_diff(nums[1]) < 64 << 20,
            "{ours:?} vs df {nums:?}"
        );
    }
}
