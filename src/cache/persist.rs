//! Writing complete chunks to the cache, and what happens when that fails:
//! a full disk is cleaned up and the write retried once, failures feed the
//! circuit breaker, and a chunk that cannot be written stays in memory.

use std::sync::Arc;

use tracing::warn;

use crate::cache::catalog::redact_str;
use crate::cache::inflight::InFlight;
use crate::cache::media::Media;
use crate::disk::{self, monitor};
use crate::store::chunks::{WriteClass, WriteError, WriteStage};
use crate::store::evict;
use crate::store::index::{ChunkRow, IndexError};
use crate::Shared;

/// Writes a complete chunk to the store and records it in the index. A
/// chunk that cannot be written stays in memory (bounded) instead; the
/// players reading it have its bytes either way.
pub async fn persist(shared: Arc<Shared>, media: Arc<Media>, index: u64, chunk: Arc<InFlight>) {
    if chunk.wait().await.is_err() {
        media.release(index, &chunk);
        return;
    }
    let Some(_ticket) = shared.writes.begin() else {
        // Shutting down: the chunk is not cached, nothing is half-written.
        media.release(index, &chunk);
        return;
    };
    // A media the index could not record (id < 0) is never written.
    if media.id() < 0
        || !shared.guard.may_write(&shared.cfg.cache_dir)
        || !room_for(&shared, chunk.len()).await
    {
        keep_in_memory(&shared, &media, index, chunk);
        return;
    }
    let mut result = write_chunk(&shared, &media, index, &chunk).await;
    if let Err(WriteFailure::Class(WriteClass::DiskFull)) = result {
        // Make room and try once more.
        let target = disk::space(&shared.cfg.cache_dir)
            .map(|s| monitor::cleanup_target(&shared, s))
            .unwrap_or(u64::MAX);
        let freed = evict::cleanup(&shared, target).await;
        result = if freed.bytes > 0 {
            write_chunk(&shared, &media, index, &chunk).await
        } else {
            result
        };
        if let Err(WriteFailure::Class(WriteClass::DiskFull)) = result {
            shared.guard.pause_disk_full();
        }
    }
    match result {
        Ok(row) => {
            shared.guard.on_success();
            shared.metrics.chunks_written.inc();
            media.set_cached(&chunk, row);
        }
        Err(WriteFailure::Gone) => media.release(index, &chunk),
        Err(WriteFailure::Class(class)) => {
            shared.guard.on_failure(class);
            keep_in_memory(&shared, &media, index, chunk);
        }
    }
}

enum WriteFailure {
    /// The media version was dropped meanwhile: nothing to keep.
    Gone,
    Class(WriteClass),
}

/// Before a write: when it would take the disk below the critical
/// threshold, clean up first; false when that did not make room.
async fn room_for(shared: &Arc<Shared>, len: u64) -> bool {
    let Ok(space) = disk::space(&shared.cfg.cache_dir) else {
        return true; // the write itself will tell
    };
    let critical = monitor::critical_bytes(shared, space);
    if space.free_bytes >= critical.saturating_add(len) {
        return true;
    }
    let done = evict::cleanup(shared, monitor::cleanup_target(shared, space)).await;
    if done.free_bytes >= critical.saturating_add(len) {
        return true;
    }
    shared.guard.pause_disk_full();
    false
}

/// Writes the file, then the row; a failure of either is classified and
/// leaves neither behind.
async fn write_chunk(
    shared: &Arc<Shared>,
    media: &Arc<Media>,
    index: u64,
    chunk: &Arc<InFlight>,
) -> Result<ChunkRow, WriteFailure> {
    let pieces = chunk.pieces();
    let store = shared.store.clone();
    let media_id = media.id();
    let written = tokio::task::spawn_blocking(move || store.write(media_id, index, &pieces))
        .await
        .unwrap_or_else(|e| Err(WriteError::other(e)));
    let crc = match written {
        Ok(crc) => crc,
        // Its directory went with a dropped version: not a disk problem.
        Err(_) if media.is_gone() => return Err(WriteFailure::Gone),
        Err(e) => {
            write_failed(shared, media, index, e.class, &e);
            return Err(WriteFailure::Class(e.class));
        }
    };
    let row = ChunkRow {
        chunk_index: index,
        size_bytes: chunk.len(),
        crc32c: crc,
    };
    let recorded = match shared.store.injected(WriteStage::Index) {
        Some(e) => Err(IndexError::Injected(e)),
        None => shared.index.insert_chunk(media_id, row).await,
    };
    if let Err(e) = recorded {
        shared.store.remove(media_id, index);
        // A version replaced in the index meanwhile fails its foreign key.
        if media.is_gone() || crate::store::index::is_foreign_key(&e) {
            return Err(WriteFailure::Gone);
        }
        let class = crate::store::index::write_class(&e);
        write_failed(shared, media, index, class, &e);
        return Err(WriteFailure::Class(class));
    }
    Ok(row)
}

fn write_failed(
    shared: &Shared,
    media: &Media,
    index: u64,
    class: WriteClass,
    e: &dyn std::fmt::Display,
) {
    let free = disk::space(&shared.cfg.cache_dir).map_or(0, |s| s.free_bytes);
    warn!(
        class = class.as_str(),
        url = %redact_str(&media.row.url),
        chunk = index,
        free_bytes = free,
        error = %e,
        "cache write failed"
    );
    shared.metrics.write_error(class.as_str());
}

fn keep_in_memory(shared: &Shared, media: &Arc<Media>, index: u64, chunk: Arc<InFlight>) {
    shared.metrics.chunks_kept_in_memory.inc();
    if !shared.memcache.insert(media, index, chunk.clone()) {
        media.release(index, &chunk);
    }
}
