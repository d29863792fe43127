//! The `Cache` handle: what the HTTP layer asks of the cache (open a
//! media, stream its bytes), and the settings it works by.

use std::sync::Arc;
use std::time::Duration;

use super::catalog::Catalog;
use super::playlists::Playlists;
use super::run::Runs;
use crate::metrics::Metrics;
use crate::store::{ChunkFiles, Index};
use crate::upstream::{Upstream, UpstreamError};

/// How the cache behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub chunk_size: u64,
    /// The most bytes fetched ahead of the playhead.
    pub read_ahead: u64,
    /// Read-ahead as a time of media, where its byte rate is known (bounded
    /// by `read_ahead`).
    pub read_ahead_time: Option<Duration>,
    /// Fetch a media's index at once on its first open.
    pub index_first: bool,
    /// How long read-ahead goes on for a position nobody reads any more.
    pub read_ahead_grace: Duration,
    /// Age after which an origin's validators are checked again.
    pub revalidate_after: Duration,
    /// Largest size an origin may claim for a media.
    pub max_media_size: u64,
    /// How long a player may take no bytes before its stream is closed.
    pub write_timeout: Duration,
    /// Response bodies streaming at once.
    pub max_streams: usize,
}

impl Settings {
    /// The read-ahead policy these settings make (`readahead.rs`).
    pub fn read_ahead_policy(&self) -> super::Policy {
        super::Policy {
            max_bytes: self.read_ahead,
            time: self.read_ahead_time,
            grace: self.read_ahead_grace,
        }
    }
}

/// What the HTTP layer asks of the cache: open a media, stream its bytes.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cache {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub settings: Settings,
    /// One permit per response body streaming.
    pub streams: Arc<tokio::sync::Semaphore>,
    pub catalog: Catalog,
    pub runs: Runs,
    pub playlists: Playlists,
    pub index: Index,
    pub files: ChunkFiles,
    pub metrics: Arc<Metrics>,
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
                streams: Arc::new(tokio::sync::Semaphore::new(settings.max_streams)),
                settings,
                catalog,
                playlists: Playlists::new(runs.upstream().clone()),
                runs,
                index,
                files,
                metrics,
            }),
        }
    }

    pub(super) fn upstream(&self) -> &Upstream {
        self.inner.runs.upstream()
    }

    /// The playlists and manifests kept in memory.
    pub fn playlists(&self) -> &Playlists {
        &self.inner.playlists
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The tasks started for players (response bodies, runs,
    /// connections), which shutdown ends.
    pub fn tasks(&self) -> &super::tasks::Tasks {
        self.inner.runs.tasks()
    }

    /// How long a player may take no bytes before its stream ends.
    pub fn write_timeout(&self) -> std::time::Duration {
        self.inner.settings.write_timeout
    }

    /// A place for one more streaming response body, or None when
    /// `--max-streams` are streaming (counted in `spool_limited_total`).
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.inner.streams.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.inner.metrics.limited("max_streams");
        }
        permit
    }

    /// Whether byte `pos` of a media can be had: cached, or fetched from
    /// an origin that honours Range, or not too far to skip to.
    pub fn reachable(&self, media: &super::media::Media, pos: u64) -> Result<(), UpstreamError> {
        if media.row.accepts_ranges || media.slot(pos / media.chunk_size()).is_some() {
            return Ok(());
        }
        self.upstream().may_skip(pos)
    }

    /// Writes the chunks kept in memory while caching could not, if it can
    /// now (an admin's resume); returns how many writes started.
    pub fn write_kept(&self) -> usize {
        self.inner.runs.writer().write_kept()
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
