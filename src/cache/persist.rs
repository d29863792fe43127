//! Writing complete chunks to the cache, and what happens when that fails:
//! a full disk is cleaned up and the write retried once, failures feed the
//! circuit breaker, and a chunk that cannot be written stays in memory.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::catalog::Catalog;
use super::inflight::InFlight;
use super::media::{Media, Slot};
use super::memcache::MemCache;
use crate::disk::{out_of_descriptors, Breaker, Disk, WriteClass};
use crate::metrics::Metrics;
use crate::store::error::{WriteError, WriteStage};
use crate::store::{ChunkFiles, Evictor, Index, MediaId};
use crate::store::{ChunkRow, IndexError};
use crate::upstream::redact;

/// Writes complete chunks. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    files: ChunkFiles,
    index: Index,
    breaker: Breaker,
    evictor: Evictor,
    disk: Disk,
    memcache: MemCache,
    /// Which chunks players need, so a cleanup leaves them.
    catalog: Catalog,
    metrics: Arc<Metrics>,
    /// Chunk writes in progress, so shutdown can wait for them.
    writes: TaskTracker,
    /// Cancelled at shutdown: chunks not complete by then are not written.
    closing: CancellationToken,
}

/// What the writer is made of.
pub(crate) struct Parts {
    pub files: ChunkFiles,
    pub index: Index,
    pub breaker: Breaker,
    pub evictor: Evictor,
    pub disk: Disk,
    pub memcache: MemCache,
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
}

enum WriteFailure {
    /// The media version was dropped meanwhile: nothing to keep.
    Gone,
    /// The process ran out of file descriptors (EMFILE, ENFILE): not the
    /// disk's fault, so neither counted as a write error nor fed to the
    /// breaker; the chunk stays in memory.
    Busy,
    Class(WriteClass),
}

impl Writer {
    pub fn new(p: Parts) -> Writer {
        Writer {
            inner: Arc::new(Inner {
                files: p.files,
                index: p.index,
                breaker: p.breaker,
                evictor: p.evictor,
                disk: p.disk,
                memcache: p.memcache,
                catalog: p.catalog,
                metrics: p.metrics,
                writes: TaskTracker::new(),
                closing: CancellationToken::new(),
            }),
        }
    }

    pub fn memcache(&self) -> &MemCache {
        &self.inner.memcache
    }

    /// Writes the chunks kept in memory while caching could not write
    /// (paused, disk full, failing writes), once it can again: players
    /// re-reading them find them on disk, and they outlive a restart.
    /// Returns how many writes started.
    pub fn write_kept(&self) -> usize {
        if !self.inner.breaker.is_writing() {
            return 0;
        }
        let kept = self.inner.memcache.drain_writable();
        let n = kept.len();
        for (media, index, chunk) in kept {
            let _ = self.spawn(media, index, chunk);
        }
        n
    }

    /// Why the cache may not grow by `more` bytes now (a fill waits for
    /// nobody and must not push out what is cached), if it may not:
    /// caching paused, the disk below its healthy levels, or
    /// `--max-cache-size` passed.
    pub async fn may_grow(&self, more: u64) -> Result<(), &'static str> {
        let inner = &self.inner;
        if !inner.breaker.is_writing() {
            return Err("caching is paused");
        }
        if let Some((_, level)) = inner.disk.last() {
            if level >= crate::disk::Level::Warning {
                return Err("the disk is low on free space");
            }
        }
        match inner.evictor.has_room(more).await {
            true => Ok(()),
            false => Err("it would pass --max-cache-size"),
        }
    }

    /// Writes the chunks of `media` kept in memory (a prefetch writes
    /// them instead of fetching them again).
    pub fn write_kept_of(&self, media: &Arc<Media>) {
        for (index, slot) in media.slots() {
            if let Slot::Pending(_) = slot {
                if let Some(chunk) = self.inner.memcache.take(media, index) {
                    let _ = self.spawn(media.clone(), index, chunk);
                }
            }
        }
    }

    /// Writes a chunk once it is complete, as a task that shutdown waits
    /// for. Returns None when shutting down (nothing is written then).
    pub fn spawn(
        &self,
        media: Arc<Media>,
        index: u64,
        chunk: Arc<InFlight>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.inner.closing.is_cancelled() {
            media.release(index, &chunk);
            return None;
        }
        let w = self.clone();
        Some(
            self.inner
                .writes
                .spawn(async move { w.persist(media, index, chunk).await }),
        )
    }

    /// The index could not record a new media (the caller logged it): a
    /// full disk stops caching and says so once per episode; other
    /// classes count and feed the breaker like any failed write.
    pub async fn index_failed(&self, class: WriteClass) {
        let breaker = &self.inner.breaker;
        if class == WriteClass::DiskFull {
            let free = self.free_bytes().await;
            breaker.pause_disk_full(free);
        } else {
            breaker.count(class);
            breaker.on_failure(class);
        }
    }

    /// Free bytes now, or as last sampled (0 when never known): for the
    /// log and the disk-full pause.
    async fn free_bytes(&self) -> u64 {
        self.inner
            .disk
            .space_or_last()
            .await
            .map_or(0, |s| s.free_bytes)
    }

    /// Refuses new writes and waits for those under way, at most `limit`.
    pub async fn close_and_wait(&self, limit: std::time::Duration) {
        self.inner.closing.cancel();
        self.inner.writes.close();
        if tokio::time::timeout(limit, self.inner.writes.wait())
            .await
            .is_err()
        {
            warn!("chunk writes still running at shutdown; start-up will clean up");
        }
    }

    /// Writes a complete chunk to the store and records it in the index. A
    /// chunk that cannot be written stays in memory (bounded) instead; the
    /// players reading it have its bytes either way.
    async fn persist(&self, media: Arc<Media>, index: u64, chunk: Arc<InFlight>) {
        let complete = tokio::select! {
            r = chunk.wait() => r.is_ok(),
            _ = self.inner.closing.cancelled() => false,
        };
        // Shutting down: the chunk is not cached, nothing is half-written.
        if !complete || self.inner.closing.is_cancelled() {
            media.release(index, &chunk);
            return;
        }
        // A media the index could not record is never written.
        let Some(media_id) = media.id() else {
            self.keep_in_memory(&media, index, chunk);
            return;
        };
        let inner = &self.inner;
        if !inner.breaker.may_write().await || !self.room_for(chunk.len()).await {
            self.keep_in_memory(&media, index, chunk);
            return;
        }
        let mut result = self.write_chunk(&media, media_id, index, &chunk).await;
        if let Err(WriteFailure::Class(WriteClass::DiskFull)) = result {
            // Make room and try once more. Whether to retry is decided by
            // the free space after the cleanup, not by what this cleanup
            // evicted: a writer that waited for another's cleanup finds the
            // room made and nothing left for itself to evict.
            // Free space that cannot be measured is judged by the last
            // good sample; with none, nothing is evicted for this write.
            let space = inner.disk.space_or_last().await;
            let target = space.map_or(0, |s| inner.disk.cleanup_target(s));
            let done = inner.evictor.cleanup(target, &inner.catalog).await;
            let room = space.is_some_and(|s| {
                let after = crate::disk::Space {
                    free_bytes: done.free_bytes,
                    ..s
                };
                inner.disk.has_room(after, chunk.len())
            });
            if room {
                result = self.write_chunk(&media, media_id, index, &chunk).await;
            }
            if let Err(WriteFailure::Class(WriteClass::DiskFull)) = result {
                inner.breaker.pause_disk_full(done.free_bytes);
            }
        }
        match result {
            Ok(row) => {
                inner.breaker.on_success();
                inner.metrics.chunks_written.inc();
                media.set_cached(&chunk, row);
            }
            Err(WriteFailure::Gone) => media.release(index, &chunk),
            Err(WriteFailure::Busy) => self.keep_in_memory(&media, index, chunk),
            Err(WriteFailure::Class(class)) => {
                inner.breaker.on_failure(class);
                self.keep_in_memory(&media, index, chunk);
            }
        }
    }

    /// Before a write: when it would take the disk below the critical
    /// threshold, clean up first; false when that did not make room.
    async fn room_for(&self, len: u64) -> bool {
        let inner = &self.inner;
        let Ok(space) = inner.disk.space().await else {
            return true; // the write itself will tell
        };
        if inner.disk.has_room(space, len) {
            return true;
        }
        let target = inner.disk.cleanup_target(space);
        let done = inner.evictor.cleanup(target, &inner.catalog).await;
        let after = crate::disk::Space {
            free_bytes: done.free_bytes,
            ..space
        };
        if inner.disk.has_room(after, len) {
            return true;
        }
        inner.breaker.pause_disk_full(done.free_bytes);
        false
    }

    /// Writes the file, then the row; a failure of either is classified and
    /// leaves neither behind.
    async fn write_chunk(
        &self,
        media: &Arc<Media>,
        media_id: MediaId,
        index: u64,
        chunk: &Arc<InFlight>,
    ) -> Result<ChunkRow, WriteFailure> {
        let inner = &self.inner;
        let pieces = chunk.pieces();
        let files = inner.files.clone();
        let written = tokio::task::spawn_blocking(move || files.write(media_id, index, &pieces))
            .await
            .unwrap_or_else(|e| Err(WriteError::other(e)));
        let crc = match written {
            Ok(crc) => crc,
            // Its directory went with a dropped version: not a disk problem.
            Err(_) if media.is_gone() => return Err(WriteFailure::Gone),
            Err(e) if out_of_descriptors(&e.source) => {
                warn!(error = %e, "out of file descriptors; chunk kept in memory");
                return Err(WriteFailure::Busy);
            }
            Err(e) => {
                self.write_failed(media, index, e.class, &e).await;
                return Err(WriteFailure::Class(e.class));
            }
        };
        let row = ChunkRow::new(index, chunk.len(), crc);
        let recorded = match inner.files.injected(WriteStage::Index) {
            Some(e) => Err(IndexError::Injected(e)),
            None => inner.index.insert_chunk(media_id, row).await,
        };
        if let Err(e) = recorded {
            inner.files.remove_many(vec![(media_id, index)]).await;
            // A version replaced in the index meanwhile fails its foreign key.
            if media.is_gone() || e.is_foreign_key() {
                return Err(WriteFailure::Gone);
            }
            let class = e.write_class();
            self.write_failed(media, index, class, &e).await;
            return Err(WriteFailure::Class(class));
        }
        Ok(row)
    }

    async fn write_failed(
        &self,
        media: &Media,
        index: u64,
        class: WriteClass,
        e: &(dyn std::fmt::Display + Sync),
    ) {
        let free = self.free_bytes().await;
        warn!(
            class = %class.as_str(),
            url = %redact(&media.url),
            chunk = index,
            free_bytes = free,
            error = %e,
            "cache write failed"
        );
        self.inner.breaker.count(class);
    }

    fn keep_in_memory(&self, media: &Arc<Media>, index: u64, chunk: Arc<InFlight>) {
        self.inner.metrics.chunks_kept_in_memory.inc();
        if !self.inner.memcache.insert(media, index, chunk.clone()) {
            media.release(index, &chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::rig::{media, rig};
    use crate::store::faults::Fault;
    use bytes::Bytes;

    fn complete_chunk(media: &Media) -> Arc<InFlight> {
        let feed = crate::cache::inflight::Transfer::new(0, 9);
        let (_, chunk) = media.claim(0, 0, 0, &feed, None).pop().unwrap();
        chunk.push_at(0, Bytes::from_static(b"0123456789"));
        chunk.finish(0, Ok(()));
        chunk
    }

    /// A write that met a full disk, while nothing was left to evict (a
    /// concurrent cleanup had already freed the space), retries because
    /// the space is there, instead of pausing caching.
    #[tokio::test]
    async fn disk_full_retry_is_decided_by_free_space() {
        let rig = rig();
        let media = media(&rig).await;
        let chunk = complete_chunk(&media);
        rig.files.inject(Fault {
            stage: WriteStage::Write,
            errno: 28, // ENOSPC
            times: 1,
            after_bytes: 3,
        });
        rig.writer
            .spawn(media.clone(), 0, chunk)
            .unwrap()
            .await
            .unwrap();
        assert!(rig.breaker.is_writing(), "caching was paused");
        let id = media.id().unwrap();
        assert_eq!(rig.index.chunks(id).await.unwrap().len(), 1, "retried");
        assert!(rig
            .metrics
            .encode()
            .contains("spool_chunks_written_total 1"));
    }

    /// Filesystem work runs on blocking threads, never on the async thread
    /// that streams: free space, writing, evicting, removing a media's
    /// files, the breaker's probe write, repair. (The test marks its own
    /// thread, the only async one here; a blocking call on it fails.)
    #[tokio::test]
    async fn filesystem_work_stays_off_the_async_thread() {
        let rig = rig();
        let media = media(&rig).await;
        let id = media.id().unwrap();
        crate::disk::blocking::mark_async_thread();
        let chunk = complete_chunk(&media);
        rig.writer
            .spawn(media.clone(), 0, chunk)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(rig.index.chunks(id).await.unwrap().len(), 1);
        rig.files.remove_many(vec![(id, 0)]).await;
        rig.files.remove_media(id).await;
        // The breaker's probe write, after its (zero) cool-down.
        let breaker = Breaker::new(
            rig._dir.path(),
            1,
            std::time::Duration::ZERO,
            rig.metrics.clone(),
        );
        breaker.on_failure(WriteClass::Io);
        assert!(breaker.may_write().await);
        let report = crate::store::walk::scan(
            &rig.files,
            &rig.index,
            crate::store::walk::ScanOptions::default(),
        )
        .await
        .unwrap();
        crate::store::recover::repair(&rig.files, &rig.index, &report)
            .await
            .unwrap();
    }
}
