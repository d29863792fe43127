//! Keeping the cache in bounds while spool serves: the disk monitor's loop
//! (levels logged once, cleanup at Critical, caching paused and resumed),
//! `--max-cache-size`, forgetting idle media, the background checksum
//! scrub, and start-up reconciliation.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::access::Accesses;
use super::catalog::Catalog;
use super::journal;
use super::persist::Writer;
use crate::disk::{Breaker, Disk, Level, Space};
use crate::history::{Event, Kind};
use crate::metrics::{KindLabel, Metrics, RECOVERY_KINDS};
use crate::store::recover::{self, Problem, Report};
use crate::store::walk::{self, ScanOptions};
use crate::store::{ChunkFiles, Evictor, Index};

/// How often idle media rows and old events are looked for.
const TIDY_EVERY: Duration = Duration::from_secs(60);

/// Media unused this long are dropped from memory (not from the cache).
const MEDIA_IDLE: Duration = Duration::from_secs(600);

/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Upkeep {
    inner: Arc<Inner>,
}

/// What upkeep is made of.
pub(crate) struct Parts {
    pub files: ChunkFiles,
    pub disk: Disk,
    pub breaker: Breaker,
    pub evictor: Evictor,
    pub catalog: Catalog,
    pub index: Index,
    /// Writes chunks kept in memory once caching can write again.
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    /// Reads not in the index yet, written at each check.
    pub accesses: Accesses,
    /// `--max-age`: media nobody read this long are evicted.
    pub max_age: Option<Duration>,
    /// `--events-retention`: history events older are pruned (zero: kept).
    pub events_retention: Duration,
    pub chunk_size: u64,
    /// Media rows with no chunks, unread this long, are removed.
    pub forget_media_after: Duration,
    pub disk_check_interval: Duration,
    pub scrub_interval: Duration,
    /// Most bytes a second the background check reads (0: no limit).
    pub scrub_rate: u64,
}

type Inner = Parts;

impl Upkeep {
    pub fn new(parts: Parts) -> Upkeep {
        Upkeep {
            inner: Arc::new(parts),
        }
    }

    /// Samples the disk once and acts on its level; returns the level.
    pub async fn check_disk(&self) -> Option<Level> {
        let u = &self.inner;
        let space = match u.disk.space().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the cache filesystem's free space");
                return None;
            }
        };
        let mut level = u.disk.level(space);
        // Cleaning up at Critical, and also while caching is paused for a
        // full disk at any level: the pause would otherwise outlive the
        // players that kept chunks from being evicted (a paused cache
        // attempts no writes, so no write would ask for a cleanup).
        let paused = u.breaker.mode() == crate::disk::breaker::Mode::PausedDiskFull;
        if level == Level::Critical || (paused && !u.disk.has_room(space, u.chunk_size)) {
            let target = u.disk.cleanup_target(space);
            let done = u.evictor.cleanup(target, &u.catalog).await;
            let after = Space {
                free_bytes: done.free_bytes,
                ..space
            };
            level = u.disk.level(after);
            if level == Level::Critical {
                // Someone else filled the disk: stop adding to it.
                u.breaker.pause_disk_full(done.free_bytes);
            }
        }
        let now = u.disk.space().await.unwrap_or(space);
        // Resume only with room for a chunk above the threshold, the same
        // test a write makes, so caching does not flap.
        if level != Level::Critical && u.disk.has_room(now, u.chunk_size) {
            u.breaker.space_back();
        }
        u.disk.record(now, level);
        let m = &u.metrics;
        m.disk_free_bytes.set(now.free_bytes as i64);
        m.disk_total_bytes.set(now.total_bytes as i64);
        m.disk_level.set(level as i64);
        m.caching_paused.set(i64::from(!u.breaker.is_writing()));
        m.memory_cache_bytes.set(u.writer.memcache().bytes() as i64);
        m.sample_traffic(crate::store::unix_now());
        let commits = u.index.commits();
        m.index_commits
            .inc_by(commits.saturating_sub(m.index_commits.get()));
        // One sum over the chunk rows per check (a covering scan of the
        // table; the index thread spends milliseconds on a million rows).
        if let Ok((_, chunks, bytes)) = u.index.totals().await {
            m.cache_bytes.set(bytes as i64);
            m.cache_chunks.set(chunks as i64);
        }
        Some(level)
    }

    /// Runs forever: one disk check every `--disk-check-interval`, then
    /// `--max-cache-size` and idle media.
    pub async fn run(self) {
        let mut last: Option<Level> = None;
        // When forgetting and pruning last ran, and whether events older
        // than the retention are left.
        let mut tidied: Option<std::time::Instant> = None;
        let mut prune_more = false;
        loop {
            if let Some(level) = self.check_disk().await {
                if last != Some(level) {
                    let space = self.inner.disk.last().map(|l| l.0);
                    let free = space.map_or(0, |s| s.free_bytes);
                    let total = space.map_or(0, |s| s.total_bytes);
                    // A healthy disk at start is no news.
                    if last.is_some() || level != Level::Healthy {
                        let e = Event::new(Kind::DiskLevel, crate::store::unix_now())
                            .reason(level.as_str())
                            .bytes(free);
                        self.inner.metrics.history.record(e);
                    }
                    match level {
                        Level::Healthy | Level::Info => {
                            info!(level = %level.as_str(), free, total, "disk level")
                        }
                        Level::Warning | Level::Critical => {
                            warn!(level = %level.as_str(), free, total, "disk level")
                        }
                    }
                    last = Some(level);
                }
            }
            // Caching may write again (space back, a resume, the breaker
            // closed): what was kept in memory meanwhile goes to disk.
            let kept = self.inner.writer.write_kept();
            if kept > 0 {
                info!(
                    chunks = kept,
                    "writing chunks kept in memory while caching could not"
                );
            }
            self.inner.catalog.sweep(MEDIA_IDLE);
            // Read times first: eviction orders by them.
            self.inner.accesses.flush().await;
            self.inner.evictor.trim(&self.inner.catalog).await;
            self.age_out().await;
            // What happened, evictions of this check included.
            journal::write(&self.inner.index, &self.inner.metrics).await;
            // Ages of an hour and more: once a minute is often enough, and
            // an idle spool's checks then write nothing.
            let every = TIDY_EVERY.min(self.inner.forget_media_after);
            if tidied.is_none_or(|t| t.elapsed() >= every) || prune_more {
                if !prune_more {
                    self.forget_media().await;
                    tidied = Some(std::time::Instant::now());
                }
                let pruned = journal::prune(&self.inner.index, self.inner.events_retention).await;
                prune_more = pruned >= journal::PRUNE_BATCH as usize;
            }
            tokio::time::sleep(self.inner.disk_check_interval).await;
        }
    }

    /// `--max-age`: evicts media nobody read within it, but pinned
    /// titles' and those a player has open.
    async fn age_out(&self) {
        let u = &self.inner;
        let Some(age) = u.max_age.filter(|a| !a.is_zero()) else {
            return;
        };
        let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        let before = crate::store::unix_now().saturating_sub(age);
        u.evictor
            .age_out(before, &u.catalog.playing_ids(), &u.catalog)
            .await;
    }

    /// Writes the read times and the history gathered in memory to the
    /// index (at shutdown).
    pub async fn flush_accesses(&self) {
        self.inner.accesses.flush().await;
        journal::write(&self.inner.index, &self.inner.metrics).await;
    }

    /// Removes index rows of media with nothing cached that nobody read
    /// for `--forget-media-after`, and titles left with no media.
    async fn forget_media(&self) {
        let u = &self.inner;
        let age = i64::try_from(u.forget_media_after.as_secs()).unwrap_or(i64::MAX);
        let before = crate::store::unix_now().saturating_sub(age);
        match u.index.forget_media(before, u.catalog.open_ids()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(media = n, "forgot media with nothing cached"),
            Err(e) => warn!(error = %e, "cannot forget unused media"),
        }
        // Titles whose media all went, unpinned and not played since.
        match u
            .index
            .call(move |c| crate::store::titles::prune(c, before))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(titles = n, "forgot titles with nothing cached"),
            Err(e) => warn!(error = %e, "cannot forget unused titles"),
        }
    }

    /// Start-up reconciliation: temp files and orphans removed, rows of
    /// missing or wrong-length files removed. Files and rows newer than
    /// `started` belong to this process and are left alone.
    pub async fn reconcile(self, started: std::time::SystemTime) {
        let u = &self.inner;
        let opts = ScanOptions {
            checksums: false,
            since: Some(started),
            rate: None,
        };
        // A media at a time, fixed as it goes: memory does not grow with
        // the size of the cache.
        let report = match walk::scan_and_repair(&u.files, &u.index, opts, |_| true).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "start-up reconciliation failed");
                return;
            }
        };
        for (kind, n) in RECOVERY_KINDS.into_iter().zip(report.found_by_kind()) {
            u.metrics
                .recovery_fixed
                .get_or_create(&KindLabel { kind })
                .inc_by(n);
        }
        info!(summary = %report.summary(), "start-up reconciliation done");
    }

    /// Checks every cached chunk against its checksum every
    /// `--scrub-interval`, so corruption is found before a player meets it.
    pub async fn scrub_loop(self) {
        let interval = self.inner.scrub_interval;
        if interval.is_zero() {
            return;
        }
        loop {
            tokio::time::sleep(interval).await;
            self.scrub().await;
        }
    }

    /// One background check of every chunk, a media at a time, reading
    /// at most `--scrub-rate` bytes a second. Only bad chunks and rows of
    /// missing files are fixed here; temp files and orphans may belong to
    /// writes under way and are left to start-up.
    pub async fn scrub(&self) -> Report {
        let u = &self.inner;
        let opts = ScanOptions {
            checksums: true,
            since: Some(std::time::SystemTime::now()),
            rate: Some(u.scrub_rate),
        };
        let mut all = Report::default();
        let mut walk = walk::Walk::new(&u.files, &u.index, opts).await;
        loop {
            let mut report = match walk.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "background check failed");
                    break;
                }
            };
            report.keep_only(|p| {
                matches!(
                    p,
                    Problem::Corrupt { .. } | Problem::WrongLength { .. } | Problem::Missing { .. }
                )
            });
            // While a bad chunk's row and file go, its slot holds a
            // placeholder, so no player fetches it again into the same
            // file name meanwhile (the same rule as eviction).
            let mut held = Vec::new();
            for p in &report.problems {
                if let Some((media_id, chunk, _)) = p.row() {
                    if let Some(m) = u.catalog.by_id(media_id) {
                        held.extend(m.retire_cached(chunk));
                    }
                    u.metrics.corrupt_chunks.inc();
                    let why = match p {
                        Problem::Corrupt { .. } => "checksum",
                        Problem::WrongLength { .. } => "length",
                        _ => "missing",
                    };
                    let e = Event::new(Kind::Quarantine, crate::store::unix_now())
                        .media(media_id.0)
                        .chunk(chunk)
                        .reason(why);
                    u.metrics.history.record(e);
                }
            }
            if let Err(e) = recover::repair(&u.files, &u.index, &report).await {
                warn!(error = %e, "background check could not repair");
            }
            drop(held);
            all.absorb(report, recover::KEPT_PROBLEMS);
        }
        info!(summary = %all.summary(), "background chunk check done");
        all
    }
}
