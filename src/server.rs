//! Wiring and lifecycle: builds each layer's handles from the
//! configuration, serves on a listener, runs the background tasks, and
//! shuts down gracefully (streams cut at `--shutdown-timeout`, chunk
//! writes finished, the index flushed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info};

use crate::cache::catalog::Catalog;
use crate::cache::fill::FillPace;
use crate::cache::memcache::MemCache;
use crate::cache::persist::{self, Writer};
use crate::cache::prefetch::{Prefetches, MAX_PREFETCH_JOBS};
use crate::cache::run::Runs;
use crate::cache::upkeep::{self, Upkeep};
use crate::cache::{self, Accesses, Cache};
use crate::config::Config;
use crate::disk::{Breaker, CacheLock, Disk, LockError, Thresholds, WriteClass};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::rules;
use crate::store::IndexError;
use crate::store::{recover, ChunkFiles, Evictor, Index};
use crate::upstream::Upstream;

/// Largest piece read from a chunk file at once: bounds memory per player.
const READ_PIECE: usize = crate::cache::body::READ_PIECE as usize;

/// A spool server, ready to serve. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    cfg: Arc<Config>,
    cache: Cache,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    upkeep: Upkeep,
    writer: Writer,
    index: Index,
    /// The cache directory could not hold an index: this run's index lives
    /// in memory (and start-up reconciliation must not judge the files).
    index_in_memory: bool,
    /// When this process started: files and rows older than this are from
    /// an earlier run.
    started: std::time::SystemTime,
    /// The cache directory held by this server (`disk/lock.rs`) until it
    /// stops serving.
    lock: Arc<std::sync::Mutex<Option<CacheLock>>>,
    #[cfg(feature = "testing")]
    files: ChunkFiles,
    #[cfg(feature = "testing")]
    breaker: Breaker,
}

impl Server {
    /// Builds every handle. A cache directory that cannot hold an index
    /// does not stop spool: it serves uncached with an index in memory and
    /// reports not ready.
    pub async fn new(cfg: Config) -> anyhow::Result<Server> {
        anyhow::ensure!(
            (64 * 1024..=1 << 30).contains(&cfg.chunk_size),
            "--chunk-size must be between 64KiB and 1GiB"
        );
        let started = std::time::SystemTime::now();
        let metrics = Arc::new(Metrics::new());
        let dir = cfg.cache_dir.clone();
        let breaker = Breaker::new(
            &dir,
            cfg.breaker_threshold,
            cfg.breaker_cool_down,
            metrics.clone(),
        );
        // One server per cache directory: a held one stops this start.
        let lock = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = crate::disk::make_private(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot make the cache directory private");
                }
                CacheLock::acquire(&dir)
            })
            .await
            .context("locking the cache directory")?
        };
        let lock = match lock {
            Ok(l) => Some(l),
            Err(e @ LockError::Held(_)) => return Err(e.into()),
            // A cache directory that cannot hold a lock file cannot hold
            // chunks either: what follows serves uncached.
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the cache directory");
                None
            }
        };
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || open_index(&dir))
                .await
                .context("opening the index")?
        };
        let (index, index_in_memory) = match opened {
            Ok((index, recreated)) => {
                if recreated {
                    metrics.index_recreated.inc();
                }
                (index, false)
            }
            Err((class, why)) => {
                error!(
                    class = %class.as_str(),
                    cache_dir = %dir.display(),
                    error = %why,
                    "cache unusable; serving uncached"
                );
                breaker.count(class);
                breaker.on_failure(WriteClass::PermissionDenied);
                (Index::open_in_memory()?, true)
            }
        };
        record_start(&index, &metrics).await;
        let settings = cache::Settings {
            chunk_size: cfg.chunk_size,
            read_ahead: cfg.read_ahead.max_bytes(cfg.read_ahead_limit),
            read_ahead_time: match cfg.read_ahead {
                crate::config::ReadAhead::Time(t) => Some(t),
                crate::config::ReadAhead::Bytes(_) => None,
            },
            index_first: cfg.index_first,
            read_ahead_grace: cfg.read_ahead_grace,
            revalidate_after: cfg.revalidate_after,
            max_media_size: cfg.max_media_size,
            write_timeout: cfg.write_timeout,
            sendfile: cfg.sendfile,
            max_streams: cfg.max_streams,
            fill_after: cfg.fills_anywhere().then_some(cfg.fill_after),
            fill_by_default: cfg.fill_while_watched,
        };
        let disk = Disk::new(
            &dir,
            Thresholds {
                min_free_percent: cfg.free_space.min_free_percent,
                min_free_bytes: cfg.free_space.min_free_bytes,
                cleanup_headroom: cfg.cleanup_headroom,
            },
        );
        // Two descriptors a client connection may take (its socket, an
        // origin's), one a download.
        let reserved = 2 * cfg.max_connections as u64 + cfg.max_downloads as u64;
        let files = ChunkFiles::with_reserved(&dir, cfg.fsync_chunks, READ_PIECE, reserved);
        let upstream = Upstream::new(&cfg.upstream_settings(), metrics.clone())?;
        let catalog = Catalog::new(settings.read_ahead_policy());
        let memcache = MemCache::new(cfg.memory_cache);
        let evictor = Evictor::new(
            index.clone(),
            files.clone(),
            disk.clone(),
            metrics.clone(),
            cfg.max_cache_size,
        );
        let writer = Writer::new(persist::Parts {
            files: files.clone(),
            index: index.clone(),
            breaker: breaker.clone(),
            evictor: evictor.clone(),
            disk: disk.clone(),
            memcache: memcache.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
        });
        let runs = Runs::new(
            upstream,
            writer.clone(),
            index.clone(),
            files.clone(),
            settings.read_ahead_policy(),
            cfg.max_downloads,
        );
        let accesses = Accesses::new(index.clone());
        let upkeep = Upkeep::new(upkeep::Parts {
            files: files.clone(),
            disk: disk.clone(),
            breaker: breaker.clone(),
            evictor,
            catalog: catalog.clone(),
            index: index.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            accesses: accesses.clone(),
            max_age: cfg.max_age,
            events_retention: cfg.events_retention,
            chunk_size: cfg.chunk_size,
            forget_media_after: cfg.forget_media_after,
            disk_check_interval: cfg.disk_check_interval,
            scrub_interval: cfg.scrub_interval,
            scrub_rate: cfg.scrub_rate,
        });
        let readiness = Readiness {
            index: index.clone(),
            cache_dir: dir.clone(),
            disk,
            breaker: breaker.clone(),
            memcache,
            index_in_memory,
        };
        let cache = Cache::new(
            settings,
            catalog,
            runs,
            index.clone(),
            files.clone(),
            metrics.clone(),
            accesses,
        );
        Ok(Server {
            cfg: Arc::new(cfg),
            cache,
            readiness,
            metrics,
            upkeep,
            writer,
            index,
            index_in_memory,
            started,
            lock: Arc::new(std::sync::Mutex::new(lock)),
            #[cfg(feature = "testing")]
            files,
            #[cfg(feature = "testing")]
            breaker,
        })
    }

    /// Serves media on `listener` until `shutdown` resolves; the control
    /// plane on `--admin-listen` (bound here), unless that is off.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let admin = match self.cfg.admin_listen.0 {
            Some(addr) => Some(bind_admin(addr).await?),
            None => None,
        };
        let listeners = Listeners {
            media: listener,
            admin,
        };
        self.serve_on(listeners, shutdown).await
    }

    /// Serves on listeners bound by the caller (tests bind port 0) until
    /// `shutdown` resolves.
    pub async fn serve_on(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        let Listeners { media, admin } = listeners;
        let local = media.local_addr()?;
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        if admin_addr == Some(local) {
            anyhow::bail!("--admin-listen must differ from --listen ({local})");
        }
        let access = rules::access(cfg, local).await?;
        let control = rules::control(cfg, admin_addr)?;
        info!(
            listen = %local,
            admin = %admin_addr.map_or("off".to_owned(), |a| a.to_string()),
            cache_dir = %cfg.cache_dir.display(),
            chunk_size = cfg.chunk_size,
            read_ahead = %cfg.read_ahead,
            "spool serving"
        );
        set_nodelay(&media);
        if !self.index_in_memory {
            // Owned like the player tasks: cut before the cache directory's
            // lock is given up, so no other process repairs beside it.
            self.cache
                .tasks()
                .spawn(self.upkeep.clone().reconcile(self.started));
        }
        // The first disk sample before the first request; then every
        // interval.
        self.upkeep.check_disk().await;
        let monitor = tokio::spawn(self.upkeep.clone().run());
        let sessions = tokio::spawn(self.cache.sessions().clone().sweep_loop());
        // Titles recorded under URLs that are not their cache key now.
        let titles = self.cache.titles().clone();
        self.cache
            .tasks()
            .spawn(async move { titles.rekey().await });
        let scrubber =
            (!self.index_in_memory).then(|| tokio::spawn(self.upkeep.clone().scrub_loop()));
        let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
        let limits = http::Limits {
            max_ranges: cfg.max_ranges,
        };
        let conn = http::ConnLimits {
            max_connections: cfg.max_connections,
            max_per_client: cfg.max_connections_per_client,
            header_timeout: cfg.header_timeout,
            send_queue: u32::try_from(cfg.send_queue).unwrap_or(u32::MAX),
            write_timeout: cfg.write_timeout,
        };
        let metrics = self.metrics.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let prefetches = Prefetches::new(self.cache.clone(), MAX_PREFETCH_JOBS);
        // Fill while watched: the media players watch, and those a
        // restart stopped.
        if let (true, Some(asked)) = (cfg.fills_anywhere(), self.cache.fills().requests()) {
            let tasks = self.cache.tasks().clone();
            tasks.spawn(cache::filler::fill(
                prefetches.clone(),
                self.index.clone(),
                FillPace::new(cfg.fill_rate, self.writer.clone()),
                asked,
                tasks.clone(),
            ));
        }
        // Behind reverse proxies: whom to believe about clients, and the
        // public URL's path prefix, which requests may carry.
        let trusted = Arc::new(cfg.trusted_proxies.clone());
        let media_front = http::Front {
            trusted: trusted.clone(),
            prefix: http::prefix_of(&access.public_url).into(),
            header: cfg.forwarded_header,
        };
        let admin_front = http::Front {
            trusted,
            prefix: "".into(),
            header: cfg.forwarded_header,
        };
        let media_plane = http::serve(
            media,
            http::media_routes(
                self.cache.clone(),
                self.readiness.clone(),
                limits,
                access.clone(),
                http::Inert {
                    inline_documents: cfg.inline_documents,
                },
            ),
            metrics.clone(),
            conn,
            media_front,
            self.cache.tasks().clone(),
            stop.clone().cancelled_owned(),
        );
        let tasks = self.cache.tasks().clone();
        let control_plane = admin.map(|admin| {
            let api = http::Admin::new(
                self.cache.clone(),
                self.readiness.clone(),
                self.metrics.clone(),
                access,
                control,
                prefetches,
            );
            tasks.spawn(http::serve(
                admin,
                http::admin_routes(api),
                metrics,
                conn,
                admin_front,
                tasks.clone(),
                stop.clone().cancelled_owned(),
            ))
        });
        let stopper = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.cancel();
            let _ = stopping_tx.send(());
        });
        let server = async move {
            media_plane.await;
            if let Some(c) = control_plane {
                let _ = c.await;
            }
        };
        let deadline = cfg.shutdown_timeout;
        let mut shutdown_started = None;
        tokio::select! {
            _ = server => {}
            // Streams still running at the deadline are cut.
            _ = async {
                let _ = stopping.await;
                shutdown_started = Some(tokio::time::Instant::now());
                tokio::time::sleep(deadline).await;
            } => info!("shutdown deadline reached; closing remaining streams"),
        }
        // Whatever still runs for players (connections past the deadline,
        // response bodies, downloads, read-ahead, prefetch jobs) ends now:
        // nothing of this server outlives `serve`.
        tasks.cut();
        if !tasks.wait(Duration::from_secs(5)).await {
            tracing::warn!(
                left = tasks.running(),
                "player tasks still running after shutdown"
            );
        }
        // Chunk writes under way finish (no temp file left behind); new
        // ones are refused from now on.
        let left = shutdown_started.map_or(deadline, |t| deadline.saturating_sub(t.elapsed()));
        self.writer
            .close_and_wait(left.max(Duration::from_secs(1)))
            .await;
        // Read times gathered in memory, then every index update queued so
        // far, are applied before this returns.
        self.upkeep.flush_accesses().await;
        let _ = self
            .index
            .call(|c| c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"))
            .await;
        monitor.abort();
        sessions.abort();
        // Title sessions still open end with the server.
        self.cache.sessions().sweep(true);
        if let Some(s) = scrubber {
            s.abort();
        }
        // Another server (a restart) may hold the cache directory now.
        self.lock.lock().unwrap().take();
        info!("stopped");
        Ok(())
    }
}

/// Where a server listens.
pub struct Listeners {
    /// Media and the plain health answers (`--listen`).
    pub media: tokio::net::TcpListener,
    /// The control plane (`--admin-listen`); None: off.
    pub admin: Option<tokio::net::TcpListener>,
}

/// Binds the control plane's listener, with a reason that names the flag.
async fn bind_admin(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on --admin-listen {addr} (the control plane); pick another address, \
             or set it empty to turn the control plane off"
        )
    })
}

/// Serves `cfg` on `listener` until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::new(cfg).await?.serve(listener, shutdown).await
}

/// Creates the cache directory and opens its index (moving a broken one
/// aside). Blocking. Returns whether the index was recreated, or the class
/// of the failure.
fn open_index(dir: &std::path::Path) -> Result<(Index, bool), (WriteClass, String)> {
    std::fs::create_dir_all(dir).map_err(|e| (WriteClass::classify(&e), e.to_string()))?;
    recover::open_index(dir)
        .map(|(index, recreated)| (index, recreated.is_some()))
        .map_err(|e: IndexError| (e.write_class(), e.to_string()))
}

/// TCP_NODELAY on the listening socket, which Linux passes on to every
/// accepted connection. Without it, small pieces streamed from a slow
/// origin wait for the player's delayed ACK (40 ms stalls).
fn set_nodelay(listener: &tokio::net::TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Hooks for the integration tests (the `testing` feature): fault
/// injection and a look inside, never in a release build.
#[cfg(feature = "testing")]
impl Server {
    /// Makes coming cache writes fail.
    pub fn inject(&self, fault: crate::testing::Fault) {
        self.files.inject(fault);
    }

    /// Whether cache writes are allowed now (breaker closed, no pause).
    pub fn is_caching(&self) -> bool {
        self.breaker.is_writing()
    }

    /// Makes every measurement of the cache filesystem's free space fail
    /// from now on (`false`: work again), as statvfs on a failing NFS or
    /// FUSE mount does.
    pub fn fail_disk_measurements(&self, fail: bool) {
        self.readiness.disk.fail_measurements(fail);
    }

    /// Tasks started for players (connections, response bodies, runs,
    /// prefetch jobs) still running.
    pub fn running_tasks(&self) -> usize {
        self.cache.tasks().running()
    }

    /// One background checksum scrub, now.
    pub async fn scrub(&self) -> crate::testing::Report {
        self.upkeep.scrub().await
    }

    /// Compares chunk files and index rows.
    pub async fn scan(&self, opts: crate::testing::ScanOptions) -> crate::testing::Report {
        crate::store::walk::scan(&self.files, &self.index, opts)
            .await
            .expect("scan")
    }
}

/// This start in the history, and a version other than the last start's.
async fn record_start(index: &Index, metrics: &Metrics) {
    use crate::history::{Event, Kind};
    let version = env!("CARGO_PKG_VERSION");
    let now = crate::store::unix_now();
    metrics
        .history
        .record(Event::new(Kind::Started, now).reason(version));
    match index
        .call(move |c| crate::store::history::swap_version(c, version))
        .await
    {
        Ok(Some(before)) if before != version => metrics
            .history
            .record(Event::new(Kind::VersionChange, now).reason(format!("{before} -> {version}"))),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record the version in the index"),
    }
}
