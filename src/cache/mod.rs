//! The cache: media and their chunk slots, downloads from the origin,
//! response bodies, chunk writes, and the upkeep that keeps the disk in
//! bounds.
//!
//! Inside this folder, imports point one way:
//! `inflight <- media <- catalog <- memcache <- persist <- run <- open <- body`,
//! with `upkeep` beside them.

pub(crate) mod body;
pub(crate) mod catalog;
pub(crate) mod inflight;
pub(crate) mod media;
pub(crate) mod memcache;
mod open;
pub(crate) mod persist;
pub(crate) mod run;
pub(crate) mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::store::{ChunkFiles, Index};
use crate::upstream::{Upstream, UpstreamError};
use catalog::Catalog;
pub(crate) use open::Opened;
use run::Runs;

/// Why bytes of a media could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CacheError {
    /// No player wanted the chunk any more; whoever wants it next fetches
    /// it.
    #[error("download cancelled")]
    Cancelled,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl CacheError {
    /// Whether the origin's copy changed (the cached version is dropped).
    pub fn is_changed(&self) -> bool {
        matches!(self, CacheError::Upstream(UpstreamError::Changed))
    }
}

/// How the cache behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub chunk_size: u64,
    /// Bytes fetched ahead of the playhead.
    pub read_ahead: u64,
    /// How long read-ahead goes on for a position nobody reads any more.
    pub read_ahead_grace: Duration,
    /// Age after which an origin's validators are checked again.
    pub revalidate_after: Duration,
}

impl Settings {
    /// The read-ahead window in whole chunks.
    pub fn read_ahead_chunks(&self) -> u64 {
        self.read_ahead.div_ceil(self.chunk_size)
    }
}

/// What the HTTP layer asks of the cache: open a media, stream its bytes.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    catalog: Catalog,
    runs: Runs,
    index: Index,
    files: ChunkFiles,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(
        settings: Settings,
        catalog: Catalog,
        runs: Runs,
        index: Index,
        files: ChunkFiles,
        metrics: Arc<Metrics>,
    ) -> Cache {
        Cache {
            inner: Arc::new(Inner {
                settings,
                catalog,
                runs,
                index,
                files,
                metrics,
            }),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        self.inner.runs.upstream()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Checks a media URL against the allowlist before anything else
    /// happens; a media open in this process was checked when it opened.
    pub async fn check(&self, url: &url::Url) -> Result<(), UpstreamError> {
        if self.inner.catalog.contains(url.as_str()) {
            return Ok(());
        }
        self.upstream().check(url).await
    }
}
