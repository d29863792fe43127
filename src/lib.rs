//! spool: a caching media streaming proxy.
//!
//! A player asks `GET /stream?url=<origin URL>` with byte ranges; spool
//! answers from a progressive on-disk chunk cache indexed in SQLite,
//! downloading what is missing from the origin while it streams it.
//! `run` serves on a listener until `shutdown` resolves, so tests can bind
//! port 0 and stop the server when they are done.

pub mod allow;
pub mod catalog;
pub mod config;
pub mod fetch;
pub mod http;
pub mod index;
pub mod inflight;
pub mod media;
pub mod metrics;
pub mod range;
pub mod store;
pub mod stream;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tracing::info;

pub use config::Config;

/// Everything the request handlers and background tasks share.
pub struct Shared {
    pub cfg: Config,
    pub index: index::Index,
    pub store: store::Store,
    pub upstream: upstream::Upstream,
    pub catalog: catalog::Catalog,
    pub metrics: metrics::Metrics,
}

impl Shared {
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Shared>> {
        anyhow::ensure!(
            (64 * 1024..=1 << 30).contains(&cfg.chunk_size),
            "--chunk-size must be between 64KiB and 1GiB"
        );
        std::fs::create_dir_all(&cfg.cache_dir)
            .with_context(|| format!("cannot create cache dir {}", cfg.cache_dir.display()))?;
        let index = index::Index::open(&cfg.cache_dir.join("index.db"))
            .with_context(|| format!("cannot open index in {}", cfg.cache_dir.display()))?;
        Ok(Arc::new(Shared {
            store: store::Store::new(&cfg.cache_dir, cfg.fsync_chunks),
            upstream: upstream::Upstream::new(&cfg)?,
            catalog: catalog::Catalog::default(),
            metrics: metrics::Metrics::new(),
            index,
            cfg,
        }))
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
    let shared = Shared::new(cfg)?;
    info!(
        listen = %listener.local_addr()?,
        cache_dir = %shared.cfg.cache_dir.display(),
        chunk_size = shared.cfg.chunk_size,
        read_ahead = shared.cfg.read_ahead,
        "spool serving"
    );
    warp::serve(http::routes(shared))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}
