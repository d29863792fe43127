//! spool: a caching media streaming proxy.
//!
//! A player asks `GET /stream?url=<origin URL>` with byte ranges; spool
//! answers from a progressive on-disk chunk cache indexed in SQLite,
//! downloading what is missing from the origin while it streams it.
//! `run` serves on a listener until `shutdown` resolves, so tests can bind
//! port 0 and stop the server when they are done.

pub mod cache;
pub mod cmd;
pub mod config;
pub mod disk;
pub mod http;
pub mod metrics;
pub mod store;
pub mod upstream;

use cache::{catalog, media, memcache};
use disk::{breaker as guard, monitor};
use store::{index, recover};

use std::future::Future;
use std::sync::Arc;

use tracing::info;

pub use config::Config;

/// Everything the request handlers and background tasks share.
pub struct Shared {
    pub cfg: Config,
    /// When this process started: files and rows older than this are from
    /// an earlier run.
    pub started: std::time::SystemTime,
    /// Chunk writes in progress, so shutdown can wait for them.
    pub writes: Writes,
    /// Buffers for reading chunk files.
    pub read_pool: Arc<store::chunks::BufPool>,
    pub index: index::Index,
    pub store: store::chunks::Store,
    pub upstream: upstream::Upstream,
    pub catalog: catalog::Catalog,
    pub metrics: metrics::Metrics,
    /// Whether cache writes are allowed (breaker, disk-full pause).
    pub guard: guard::Guard,
    /// The cache directory could not hold an index: this run's index lives
    /// in memory (and start-up reconciliation must not judge the files).
    pub index_in_memory: bool,
    /// Complete chunks that could not be written to disk.
    pub memcache: memcache::MemCache,
    /// One cleanup at a time.
    pub cleanup_lock: tokio::sync::Mutex<()>,
    /// The disk monitor's last sample and level.
    disk: std::sync::Mutex<Option<(disk::Space, disk::Level)>>,
}

impl Shared {
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Shared>> {
        anyhow::ensure!(
            (64 * 1024..=1 << 30).contains(&cfg.chunk_size),
            "--chunk-size must be between 64KiB and 1GiB"
        );
        let started = std::time::SystemTime::now();
        let metrics = metrics::Metrics::new();
        let guard = guard::Guard::new(cfg.breaker_threshold, cfg.breaker_cool_down);
        // A cache that cannot be set up does not keep spool from serving:
        // it streams uncached, with an index in memory, and says so.
        let opened = std::fs::create_dir_all(&cfg.cache_dir)
            .map_err(|e| (store::chunks::WriteClass::classify(&e), e.to_string()))
            .and_then(|_| {
                recover::open_index(&cfg.cache_dir)
                    .map_err(|e| (index::write_class(&e), e.to_string()))
            });
        let (index, index_in_memory) = match opened {
            Ok((index, recreated)) => {
                if recreated.is_some() {
                    metrics.index_recreated.inc();
                }
                (index, false)
            }
            Err((class, why)) => {
                tracing::error!(
                    class = class.as_str(),
                    cache_dir = %cfg.cache_dir.display(),
                    error = %why,
                    "cache unusable; serving uncached"
                );
                metrics.write_error(class.as_str());
                guard.on_failure(store::chunks::WriteClass::PermissionDenied);
                (index::Index::open_in_memory()?, true)
            }
        };
        Ok(Arc::new(Shared {
            started,
            writes: Writes::default(),
            read_pool: store::chunks::BufPool::new(crate::cache::body::READ_PIECE as usize, 64),
            store: store::chunks::Store::new(&cfg.cache_dir, cfg.fsync_chunks),
            upstream: upstream::Upstream::new(&cfg)?,
            catalog: catalog::Catalog::default(),
            metrics,
            guard,
            index_in_memory,
            memcache: memcache::MemCache::new(cfg.memory_cache),
            cleanup_lock: tokio::sync::Mutex::new(()),
            disk: std::sync::Mutex::new(None),
            index,
            cfg,
        }))
    }

    /// Whether a chunk must not be evicted: a player reads it or is about
    /// to, or it is still downloading.
    pub fn is_needed(&self, media_id: i64, index: u64) -> bool {
        self.catalog.by_id(media_id).is_some_and(|m| {
            matches!(m.slot(index), Some(media::Slot::Pending(_)))
                || m.wanted(index, self.read_ahead_chunks(), self.cfg.read_ahead_grace)
        })
    }

    pub fn record_disk(&self, space: disk::Space, level: disk::Level) {
        *self.disk.lock().unwrap() = Some((space, level));
        self.metrics.disk_free_bytes.set(space.free_bytes as i64);
        self.metrics.disk_total_bytes.set(space.total_bytes as i64);
        self.metrics.disk_level.set(level as i64);
        self.metrics
            .caching_paused
            .set(i64::from(!self.guard.is_writing()));
        self.metrics
            .memory_cache_bytes
            .set(self.memcache.bytes() as i64);
    }

    pub fn disk_space(&self) -> Option<disk::Space> {
        self.disk.lock().unwrap().map(|d| d.0)
    }

    pub fn disk_level(&self) -> Option<disk::Level> {
        self.disk.lock().unwrap().map(|d| d.1)
    }

    /// The read-ahead window in whole chunks.
    pub fn read_ahead_chunks(&self) -> u64 {
        self.cfg.read_ahead.div_ceil(self.cfg.chunk_size)
    }
}

/// Serves until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(Shared::new(cfg)?, listener, shutdown).await
}

/// Serves with an existing `Shared` (tests keep a handle to it).
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    info!(
        listen = %listener.local_addr()?,
        cache_dir = %shared.cfg.cache_dir.display(),
        chunk_size = shared.cfg.chunk_size,
        read_ahead = shared.cfg.read_ahead,
        "spool serving"
    );
    set_nodelay(&listener);
    tokio::spawn(reconcile(shared.clone()));
    // The first disk sample before the first request; then every interval.
    monitor::check(&shared).await;
    let monitor = tokio::spawn(monitor::run(shared.clone()));
    let scrubber = tokio::spawn(scrub_loop(shared.clone()));
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(http::routes(shared.clone()))
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        })
        .run();
    let deadline = shared.cfg.shutdown_timeout;
    let mut shutdown_started = None;
    tokio::select! {
        _ = server => {}
        // Streams still running at the deadline are cut.
        _ = async {
            let _ = stopping.await;
            shutdown_started = Some(std::time::Instant::now());
            tokio::time::sleep(deadline).await;
        } => info!("shutdown deadline reached; closing remaining streams"),
    }
    // Chunk writes under way finish (no temp file left behind); new ones
    // are refused from now on.
    let left = shutdown_started.map_or(deadline, |t| deadline.saturating_sub(t.elapsed()));
    shared
        .writes
        .close_and_wait(left.max(std::time::Duration::from_secs(1)))
        .await;
    // Every index update queued so far is applied before this returns.
    let _ = shared
        .index
        .call(|c| c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"))
        .await;
    monitor.abort();
    scrubber.abort();
    info!("stopped");
    Ok(())
}

/// TCP_NODELAY on the listening socket, which Linux passes on to every
/// accepted connection. Without it, small pieces streamed from a slow
/// origin wait for the player's delayed ACK (40 ms stalls).
fn set_nodelay(listener: &tokio::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set TCP_NODELAY");
    }
}

/// Start-up reconciliation, in the background while spool serves: temp
/// files and orphans removed, rows of missing or wrong-length files removed.
async fn reconcile(shared: Arc<Shared>) {
    if shared.index_in_memory {
        return;
    }
    let opts = recover::ScanOptions {
        checksums: false,
        since: Some(shared.started),
    };
    let report = match recover::scan(&shared.cfg.cache_dir, &shared.index, opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "start-up reconciliation failed");
            return;
        }
    };
    if let Err(e) = recover::repair(&shared.cfg.cache_dir, &shared.index, &report).await {
        tracing::warn!(error = %e, "start-up repair failed");
    }
    for p in &report.problems {
        let kind = match p {
            recover::Problem::Temp(_) => "temp_file",
            recover::Problem::Orphan(_) => "orphan",
            recover::Problem::Missing { .. } => "missing",
            recover::Problem::WrongLength { .. } => "inconsistent",
            recover::Problem::Corrupt { .. } => "corrupt",
        };
        shared
            .metrics
            .recovery_fixed
            .get_or_create(&metrics::KindLabel { kind })
            .inc();
    }
    info!(summary = %report.summary(), "start-up reconciliation done");
}

/// Checks every cached chunk against its checksum every
/// `--scrub-interval`, so corruption is found before a player meets it.
async fn scrub_loop(shared: Arc<Shared>) {
    let interval = shared.cfg.scrub_interval;
    if interval.is_zero() || shared.index_in_memory {
        return;
    }
    loop {
        tokio::time::sleep(interval).await;
        scrub(&shared).await;
    }
}

/// One background check of every chunk. Only bad chunks and rows of
/// missing files are fixed here; temp files and orphans may belong to
/// writes under way and are left to start-up.
pub async fn scrub(shared: &Arc<Shared>) -> recover::Report {
    let opts = recover::ScanOptions {
        checksums: true,
        since: Some(std::time::SystemTime::now()),
    };
    let mut report = match recover::scan(&shared.cfg.cache_dir, &shared.index, opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "background check failed");
            return recover::Report::default();
        }
    };
    report.problems.retain(|p| {
        matches!(
            p,
            recover::Problem::Corrupt { .. }
                | recover::Problem::WrongLength { .. }
                | recover::Problem::Missing { .. }
        )
    });
    for p in &report.problems {
        if let recover::Problem::Corrupt {
            media_id, chunk, ..
        }
        | recover::Problem::WrongLength {
            media_id, chunk, ..
        }
        | recover::Problem::Missing { media_id, chunk } = p
        {
            if let Some(m) = shared.catalog.by_id(*media_id) {
                m.evict_cached(*chunk);
            }
            shared.metrics.corrupt_chunks.inc();
        }
    }
    if let Err(e) = recover::repair(&shared.cfg.cache_dir, &shared.index, &report).await {
        tracing::warn!(error = %e, "background check could not repair");
    }
    info!(summary = %report.summary(), "background chunk check done");
    report
}

/// Counts chunk writes in progress; once closed, refuses new ones.
#[derive(Default)]
pub struct Writes {
    state: std::sync::Mutex<(usize, bool)>,
    idle: tokio::sync::Notify,
}

/// Held while one chunk write runs.
pub struct WriteTicket<'a>(&'a Writes);

impl Writes {
    /// A ticket for one write, or None while shutting down.
    pub fn begin(&self) -> Option<WriteTicket<'_>> {
        let mut st = self.state.lock().unwrap();
        if st.1 {
            return None;
        }
        st.0 += 1;
        Some(WriteTicket(self))
    }

    async fn close_and_wait(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                {
                    let mut st = self.state.lock().unwrap();
                    st.1 = true;
                    if st.0 == 0 {
                        return;
                    }
                }
                idle.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!("chunk writes still running at shutdown; start-up will clean up");
        }
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap();
        st.0 -= 1;
        if st.0 == 0 {
            self.0.idle.notify_waiters();
        }
    }
}
