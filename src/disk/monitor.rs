//! The disk monitor: samples the free space of the cache's filesystem,
//! logs level changes once, cleans up when the level is Critical, and
//! pauses or resumes caching when cleanup cannot help.

use std::sync::Arc;

use tracing::{info, warn};

use crate::disk::{self, Level, Space};
use crate::store::evict;
use crate::Shared;

/// Media unused this long are dropped from memory (not from the cache).
const MEDIA_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// The critical threshold in bytes for a filesystem of this size.
pub fn critical_bytes(shared: &Shared, space: Space) -> u64 {
    let fs = &shared.cfg.free_space;
    let by_percent = (space.total_bytes as f64 * fs.min_free_percent / 100.0) as u64;
    by_percent.max(fs.min_free_bytes)
}

/// Free space that a cleanup aims for.
pub fn cleanup_target(shared: &Shared, space: Space) -> u64 {
    critical_bytes(shared, space).saturating_add(shared.cfg.cleanup_headroom)
}

/// Samples the disk once and acts on its level; returns the level.
pub async fn check(shared: &Arc<Shared>) -> Option<Level> {
    let space = match disk::space(&shared.cfg.cache_dir) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read the cache filesystem's free space");
            return None;
        }
    };
    let fs = &shared.cfg.free_space;
    let mut level = Level::of(space, fs.min_free_percent, fs.min_free_bytes);
    if level == Level::Critical {
        let done = evict::cleanup(shared, cleanup_target(shared, space)).await;
        let after = Space {
            free_bytes: done.free_bytes,
            ..space
        };
        level = Level::of(after, fs.min_free_percent, fs.min_free_bytes);
        if level == Level::Critical {
            // Someone else filled the disk: stop adding to it.
            shared.guard.pause_disk_full();
        }
    }
    let now = disk::space(&shared.cfg.cache_dir).unwrap_or(space);
    // Resume only with room for a chunk above the threshold, the same test
    // a write makes, so caching does not flap between paused and writing.
    if level != Level::Critical
        && now.free_bytes >= critical_bytes(shared, now).saturating_add(shared.cfg.chunk_size)
    {
        shared.guard.space_back();
    }
    shared.record_disk(now, level);
    Some(level)
}

/// Runs forever: one `check` every `--disk-check-interval`.
pub async fn run(shared: Arc<Shared>) {
    let mut last: Option<Level> = None;
    loop {
        if let Some(level) = check(&shared).await {
            if last != Some(level) {
                let space = shared.disk_space();
                let free = space.map_or(0, |s| s.free_bytes);
                let total = space.map_or(0, |s| s.total_bytes);
                match level {
                    Level::Healthy | Level::Info => {
                        info!(level = level.as_str(), free, total, "disk level")
                    }
                    Level::Warning | Level::Critical => {
                        warn!(level = level.as_str(), free, total, "disk level")
                    }
                }
                last = Some(level);
            }
        }
        shared.catalog.sweep(MEDIA_IDLE);
        evict::trim(&shared).await;
        tokio::time::sleep(shared.cfg.disk_check_interval).await;
    }
}
