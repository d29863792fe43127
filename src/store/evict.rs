//! Making room: least-recently-used chunks go first, and never one that a
//! player is reading or about to read (the caller's `Pins` decide which).

use std::sync::Arc;

use tracing::{info, warn};

use super::chunks::ChunkFiles;
use super::{unix_now, Index, MediaId};
use crate::disk::Disk;
use crate::history::{Event, Kind};
use crate::metrics::Metrics;

/// What one cleanup did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cleanup {
    pub chunks: u64,
    pub bytes: u64,
    /// Free bytes when it stopped.
    pub free_bytes: u64,
}

/// Rows examined per index query.
const BATCH: u32 = 256;

/// What the layer above says about one cached chunk.
pub(crate) enum Pin {
    /// Needed (read, about to be read, downloading again): keep it.
    Keep,
    /// May go. The callback, if any, runs once its row and file are gone
    /// (it releases a placeholder that kept players from fetching the
    /// chunk into the same file name meanwhile).
    Evict(Option<Box<dyn FnOnce() + Send>>),
}

/// The cache's view of which chunks are in use.
pub(crate) trait Pins: Send + Sync {
    fn pin(&self, media_id: MediaId, chunk: u64) -> Pin;
}

/// Which chunks a pass goes through.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// Least recently read first: of pinned titles' media, or of others.
    Oldest { pinned: bool },
    /// Of media last read before this (unix seconds), pinned titles' not.
    ReadBefore(i64),
}

/// When a cleanup stops.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// The cache's filesystem has this many bytes free.
    FreeBytes(u64),
    /// The cache holds at most this many bytes.
    CacheAtMost(u64),
}

/// As a log line says it: `free 1.00 GiB`, `cache at most 24.00 MiB`.
impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Goal::FreeBytes(b) => write!(f, "free {}", indicatif::BinaryBytes(b)),
            Goal::CacheAtMost(b) => write!(f, "cache at most {}", indicatif::BinaryBytes(b)),
        }
    }
}

/// Evicts chunks; one cleanup at a time. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Evictor {
    inner: Arc<Inner>,
}

struct Inner {
    index: Index,
    files: ChunkFiles,
    disk: Disk,
    metrics: Arc<Metrics>,
    /// `--max-cache-size` (0: none).
    max_cache_size: u64,
    /// One cleanup at a time.
    running: tokio::sync::Mutex<()>,
}

impl Evictor {
    pub fn new(
        index: Index,
        files: ChunkFiles,
        disk: Disk,
        metrics: Arc<Metrics>,
        max_cache_size: u64,
    ) -> Evictor {
        Evictor {
            inner: Arc::new(Inner {
                index,
                files,
                disk,
                metrics,
                max_cache_size,
                running: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Evicts chunks, least recently used first, until the cache's
    /// filesystem has `target_free` bytes free or nothing evictable is
    /// left. A caller arriving while another cleanup runs waits for it and
    /// then goes on from the space it left.
    pub async fn cleanup(&self, target_free: u64, pins: &dyn Pins) -> Cleanup {
        self.evict(Goal::FreeBytes(target_free), pins).await
    }

    /// Keeps the cache within `--max-cache-size`: past it, evicts down to
    /// 90% of it (so it does not evict a chunk for every chunk written).
    pub async fn trim(&self, pins: &dyn Pins) -> Option<Cleanup> {
        let max = self.inner.max_cache_size;
        if max == 0 {
            return None;
        }
        let (_, _, bytes) = self.inner.index.totals().await.ok()?;
        if bytes <= max {
            return None;
        }
        Some(self.evict(Goal::CacheAtMost(max / 10 * 9), pins).await)
    }

    /// Whether the cache may grow by `more` bytes and stay below what
    /// `trim` evicts down to (90% of `--max-cache-size`): a fill must not
    /// push out what is cached.
    pub async fn has_room(&self, more: u64) -> bool {
        let max = self.inner.max_cache_size;
        if max == 0 {
            return true;
        }
        match self.inner.index.totals().await {
            Ok((_, _, bytes)) => bytes.saturating_add(more) <= max / 10 * 9,
            Err(_) => false,
        }
    }

    /// `--max-age`: evicts the chunks of media last read before
    /// `before_unix`, but those of pinned titles, of media in `open`
    /// (a player reads them) and what `pins` keeps.
    pub async fn age_out(&self, before_unix: i64, open: &[MediaId], pins: &dyn Pins) -> Cleanup {
        let _one = self.inner.running.lock().await;
        let mut done = Cleanup::default();
        let all = |_: u64, _: &Cleanup, _: u64| true;
        let which = Which::ReadBefore(before_unix);
        self.pass(which, "max_age", open, pins, &mut done, &all)
            .await;
        if done.chunks > 0 {
            self.record_cleanup("max_age", &done);
            info!(
                chunks = done.chunks,
                bytes = done.bytes,
                "media not read within --max-age evicted"
            );
        }
        done
    }

    /// Free bytes now; None when they cannot be measured.
    async fn free(&self) -> Option<u64> {
        self.inner.disk.space().await.ok().map(|s| s.free_bytes)
    }

    async fn evict(&self, goal: Goal, pins: &dyn Pins) -> Cleanup {
        let _one = self.inner.running.lock().await;
        let index = &self.inner.index;
        // Unknown free space is not "none free": a goal of free bytes is
        // judged from the last good sample plus what was evicted since,
        // and without any sample at all nothing is evicted for it.
        let start = match self.free().await {
            Some(f) => Some(f),
            None => self.inner.disk.last().map(|l| l.0.free_bytes),
        };
        let Some(start) = start.or(matches!(goal, Goal::CacheAtMost(_)).then_some(0)) else {
            warn!(goal = %goal, "cleanup skipped: free space cannot be measured and was never sampled");
            return Cleanup::default();
        };
        let mut done = Cleanup {
            free_bytes: start,
            ..Cleanup::default()
        };
        let cached_at_start = match goal {
            Goal::CacheAtMost(_) => index.totals().await.map_or(0, |t| t.2),
            Goal::FreeBytes(_) => 0,
        };
        // Within a batch, freed space is estimated from the bytes evicted so
        // far (measured again after each batch), so a cleanup stops near its
        // goal instead of emptying a whole batch.
        let unmet = |free_measured: u64, done: &Cleanup, batch_bytes: u64| match goal {
            Goal::FreeBytes(target) => free_measured.saturating_add(batch_bytes) < target,
            Goal::CacheAtMost(max) => cached_at_start.saturating_sub(done.bytes) > max,
        };
        let why = match goal {
            Goal::FreeBytes(_) => "disk_space",
            Goal::CacheAtMost(_) => "max_cache_size",
        };
        let unpinned = Which::Oldest { pinned: false };
        let whole = self.pass(unpinned, why, &[], pins, &mut done, &unmet).await;
        // Pinned titles' chunks go only for a disk below its critical
        // level, last, and only until it is above it again.
        let space = match self.inner.disk.space().await {
            Ok(s) => Some(s),
            Err(_) => self.inner.disk.last().map(|l| l.0),
        };
        if let (true, Goal::FreeBytes(target), Some(space)) = (whole, goal, space) {
            let critical = self.inner.disk.critical_bytes(space).min(target);
            let unmet = |free: u64, _: &Cleanup, batch: u64| free.saturating_add(batch) < critical;
            if unmet(done.free_bytes, &done, 0) {
                let before = done;
                let pinned = Which::Oldest { pinned: true };
                self.pass(pinned, "disk_space_pinned", &[], pins, &mut done, &unmet)
                    .await;
                if done.chunks > before.chunks {
                    warn!(
                        chunks = done.chunks - before.chunks,
                        bytes = done.bytes - before.bytes,
                        free_bytes = done.free_bytes,
                        "the disk is below its critical level: chunks of pinned titles evicted"
                    );
                }
            }
        }
        self.inner.metrics.cleanups.inc();
        if done.chunks > 0 {
            self.record_cleanup(why, &done);
            info!(
                chunks = done.chunks,
                bytes = done.bytes,
                free_bytes = done.free_bytes,
                goal = %goal,
                "cache cleanup"
            );
        }
        done
    }

    /// A cleanup that evicted something, for the history.
    fn record_cleanup(&self, why: &str, done: &Cleanup) {
        let e = Event::new(Kind::Cleanup, unix_now())
            .reason(why)
            .chunks(done.chunks)
            .bytes(done.bytes);
        self.inner.metrics.history.record(e);
    }

    /// Evicts the chunks `which` names, a batch at a time, while `unmet`
    /// says so; what `pins` keeps and the media in `spared` stay. Counts
    /// what went in the metrics and the history (one event per media,
    /// `why` it went). False after an index error.
    async fn pass(
        &self,
        which: Which,
        why: &str,
        spared: &[MediaId],
        pins: &dyn Pins,
        done: &mut Cleanup,
        unmet: &(dyn Fn(u64, &Cleanup, u64) -> bool + Sync),
    ) -> bool {
        let before = *done;
        let mut per_media = std::collections::BTreeMap::new();
        let ok = self
            .pass_batches(which, spared, pins, done, unmet, &mut per_media)
            .await;
        let m = &self.inner.metrics;
        m.evicted_chunks.inc_by(done.chunks - before.chunks);
        m.evicted_bytes.inc_by(done.bytes - before.bytes);
        let now = unix_now();
        for (id, (chunks, bytes)) in per_media {
            let e = Event::new(Kind::Eviction, now)
                .media(id.0)
                .reason(why)
                .chunks(chunks)
                .bytes(bytes);
            m.history.record(e);
        }
        ok
    }

    async fn pass_batches(
        &self,
        which: Which,
        spared: &[MediaId],
        pins: &dyn Pins,
        done: &mut Cleanup,
        unmet: &(dyn Fn(u64, &Cleanup, u64) -> bool + Sync),
        per_media: &mut std::collections::BTreeMap<MediaId, (u64, u64)>,
    ) -> bool {
        let index = &self.inner.index;
        let mut kept = 0u32;
        while unmet(done.free_bytes, done, 0) {
            let batch = match which {
                Which::Oldest { pinned } => index.oldest_chunks(BATCH, kept, pinned).await,
                Which::ReadBefore(unix) => index.aged_chunks(unix, BATCH, kept).await,
            };
            let batch = match batch {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "cleanup cannot read the index");
                    return false;
                }
            };
            let mut gone = Vec::new();
            let mut after = Vec::new();
            let mut batch_bytes = 0u64;
            for (media_id, chunk, size) in batch {
                if !unmet(done.free_bytes, done, batch_bytes) {
                    break;
                }
                if spared.contains(&media_id) {
                    kept += 1;
                    continue;
                }
                match pins.pin(media_id, chunk) {
                    Pin::Keep => {
                        kept += 1;
                        continue;
                    }
                    Pin::Evict(release) => after.extend(release),
                }
                gone.push((media_id, chunk));
                let m = per_media.entry(media_id).or_insert((0, 0));
                *m = (m.0 + 1, m.1 + size);
                done.chunks += 1;
                done.bytes += size;
                batch_bytes += size;
            }
            let removed = index.remove_chunks(gone.clone()).await;
            self.inner.files.remove_many(gone).await;
            for release in after {
                release();
            }
            if let Err(e) = removed {
                warn!(error = %e, "cleanup cannot update the index");
                return false;
            }
            done.free_bytes = match self.free().await {
                Some(f) => f,
                None => done.free_bytes.saturating_add(batch_bytes),
            };
        }
        true
    }
}
