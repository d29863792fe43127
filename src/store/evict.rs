//! Making room: least-recently-used chunks go first, and never one that a
//! player is reading or about to read.

use std::sync::Arc;

use tracing::{info, warn};

use crate::disk;
use crate::Shared;

/// What one cleanup did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    pub chunks: u64,
    pub bytes: u64,
    /// Free bytes when it stopped.
    pub free_bytes: u64,
}

/// Rows examined per index query.
const BATCH: u32 = 256;

/// When a cleanup stops.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// The cache's filesystem has this many bytes free.
    FreeBytes(u64),
    /// The cache holds at most this many bytes.
    CacheAtMost(u64),
}

/// Evicts chunks, least recently used first, until the cache's filesystem
/// has `target_free` bytes free or nothing evictable is left. Only one
/// cleanup runs at a time; a caller arriving meanwhile waits for it and
/// gets its result.
pub async fn cleanup(shared: &Arc<Shared>, target_free: u64) -> Cleanup {
    evict(shared, Goal::FreeBytes(target_free)).await
}

/// Keeps the cache within `--max-cache-size`: past it, evicts down to 90%
/// of it (so it does not evict a chunk for every chunk written).
pub async fn trim(shared: &Arc<Shared>) -> Option<Cleanup> {
    let max = shared.cfg.max_cache_size;
    if max == 0 {
        return None;
    }
    let (_, _, bytes) = shared.index.totals().await.ok()?;
    if bytes <= max {
        return None;
    }
    Some(evict(shared, Goal::CacheAtMost(max / 10 * 9)).await)
}

async fn evict(shared: &Arc<Shared>, goal: Goal) -> Cleanup {
    let _one = shared.cleanup_lock.lock().await;
    let dir = &shared.cfg.cache_dir;
    let free = || disk::space(dir).map(|s| s.free_bytes).unwrap_or(0);
    let mut done = Cleanup {
        free_bytes: free(),
        ..Cleanup::default()
    };
    let cached_at_start = match goal {
        Goal::CacheAtMost(_) => shared.index.totals().await.map_or(0, |t| t.2),
        Goal::FreeBytes(_) => 0,
    };
    // Within a batch, freed space is estimated from the bytes evicted so
    // far (measured again after each batch), so a cleanup stops near its
    // goal instead of emptying a whole batch.
    let unmet = |free_measured: u64, done: &Cleanup, batch_bytes: u64| match goal {
        Goal::FreeBytes(target) => free_measured.saturating_add(batch_bytes) < target,
        Goal::CacheAtMost(max) => cached_at_start.saturating_sub(done.bytes) > max,
    };
    let mut kept = 0u32;
    while unmet(done.free_bytes, &done, 0) {
        let batch = match shared.index.oldest_chunks(BATCH, kept).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "cleanup cannot read the index");
                break;
            }
        };
        let mut gone = Vec::new();
        // While a chunk's row and file go, its slot holds a placeholder, so
        // no player downloads it again into the same file name meanwhile.
        let mut placeholders = Vec::new();
        let mut batch_bytes = 0u64;
        for (media_id, index, size) in batch {
            if !unmet(done.free_bytes, &done, batch_bytes) {
                break;
            }
            if shared.is_needed(media_id, index) {
                kept += 1;
                continue;
            }
            if let Some(m) = shared.catalog.by_id(media_id) {
                match m.retire_cached(index) {
                    Some(p) => placeholders.push((m, index, p)),
                    // Downloading again already: its row is not ours to drop.
                    None if m.slot(index).is_some() => {
                        kept += 1;
                        continue;
                    }
                    None => {}
                }
            }
            gone.push((media_id, index));
            done.chunks += 1;
            done.bytes += size;
            batch_bytes += size;
        }
        let removed = shared.index.remove_chunks(gone.clone()).await;
        for (media_id, index) in gone {
            shared.store.remove(media_id, index);
        }
        for (m, index, p) in placeholders {
            p.fail(crate::cache::inflight::ChunkFailure::Cancelled);
            m.release(index, &p);
        }
        if let Err(e) = removed {
            warn!(error = %e, "cleanup cannot update the index");
            break;
        }
        done.free_bytes = free();
    }
    shared.metrics.cleanups.inc();
    shared.metrics.evicted_chunks.inc_by(done.chunks);
    shared.metrics.evicted_bytes.inc_by(done.bytes);
    if done.chunks > 0 {
        info!(
            chunks = done.chunks,
            bytes = done.bytes,
            free_bytes = done.free_bytes,
            goal = ?goal,
            "cache cleanup"
        );
    }
    done
}
