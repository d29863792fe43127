//! The `Cache` handle: what the layers above ask of the cache. Each of
//! its concerns is a handle of its own in its own file, and `Cache`
//! holds them: opening media (`open.rs`, [`Opener`]), response bodies
//! (`body.rs`, [`Bodies`]), playlists (`playlists.rs`), what an admin sees
//! (`admin.rs`, [`Inventory`]).

use std::sync::Arc;

use url::Url;

use super::admin::Inventory;
use super::body::{self, Bodies, BodyPart, BodyTx};
use super::catalog::Catalog;
use super::media::Media;
use super::open::{Opened, Opener};
use super::playlists::Playlists;
use super::run::Runs;
use super::settings::Settings;
use super::tasks::Tasks;
use crate::metrics::Metrics;
use crate::store::{ChunkFiles, Index};
use crate::upstream::{Answer, UpstreamError, UpstreamRule};

/// What the layers above ask of the cache: open a media, stream its
/// bytes, its playlists, what an admin sees. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// One permit per response body streaming.
    streams: Arc<tokio::sync::Semaphore>,
    catalog: Catalog,
    runs: Runs,
    opener: Opener,
    bodies: Bodies,
    playlists: Playlists,
    inventory: Inventory,
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
        accesses: super::Accesses,
    ) -> Cache {
        let titles = super::Titles::new(index.clone(), runs.upstream().clone());
        Cache {
            inner: Arc::new(Inner {
                streams: Arc::new(tokio::sync::Semaphore::new(settings.max_streams)),
                opener: Opener {
                    settings,
                    catalog: catalog.clone(),
                    runs: runs.clone(),
                    index: index.clone(),
                    files: files.clone(),
                    titles: titles.clone(),
                },
                bodies: Bodies {
                    settings,
                    sessions: super::Sessions::new(titles.clone()),
                    accesses,
                    fills: super::fill::Fills::new(
                        settings.fill_after,
                        settings.fill_by_default,
                        runs.upstream().clone(),
                    ),
                    runs: runs.clone(),
                    index: index.clone(),
                    files: files.clone(),
                    metrics: metrics.clone(),
                },
                playlists: Playlists::new(runs.upstream().clone(), index.clone(), titles.clone()),
                inventory: Inventory {
                    index,
                    catalog: catalog.clone(),
                    runs: runs.clone(),
                    files,
                },
                settings,
                catalog,
                runs,
                metrics,
            }),
        }
    }

    /// Opens a media for a request whose fetches obey `rule`
    /// ([`Opener::open`]).
    pub async fn open(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        self.inner.opener.open(url, rule, start).await
    }

    /// The player's own request (its `Range` header value, or none)
    /// relayed to the origin as it is: for a media whose origin does not
    /// tell its size ([`Opened::Unsized`]), which has no chunks to cache.
    pub async fn relay(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<&str>,
    ) -> Result<Answer, UpstreamError> {
        self.inner.runs.upstream().get_raw(url, rule, range).await
    }

    /// Sends `parts` of a media into `tx` (a task per response); cuts the
    /// body when a range cannot be served, for `player` (`Player::none()`:
    /// spool's own reads, a prefetch).
    pub async fn produce(
        self,
        media: Arc<Media>,
        parts: Vec<BodyPart>,
        tx: BodyTx,
        player: super::body::Player,
    ) {
        body::produce(&self.inner.bodies, media, parts, tx, player).await
    }

    /// Player sessions of titles.
    pub fn sessions(&self) -> &super::Sessions {
        &self.inner.bodies.sessions
    }

    /// The playlists and manifests kept in memory.
    pub fn fills(&self) -> &super::fill::Fills {
        &self.inner.bodies.fills
    }

    pub fn playlists(&self) -> &Playlists {
        &self.inner.playlists
    }

    /// Titles: what playlists named, as the index records it; pins.
    pub fn titles(&self) -> &super::Titles {
        self.inner.playlists.titles()
    }

    /// What an admin sees of the cache and may do to it.
    pub fn inventory(&self) -> &Inventory {
        &self.inner.inventory
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The tasks started for players (response bodies, runs,
    /// connections), which shutdown ends.
    pub fn tasks(&self) -> &Tasks {
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
    pub fn reachable(&self, media: &Media, pos: u64) -> Result<(), UpstreamError> {
        if media.row.accepts_ranges || media.slot(pos / media.chunk_size()).is_some() {
            return Ok(());
        }
        self.inner.runs.upstream().may_skip(pos)
    }

    /// Writes the chunks kept in memory while caching could not, if it can
    /// now (an admin's resume); returns how many writes started.
    pub fn write_kept(&self) -> usize {
        self.inner.runs.writer().write_kept()
    }

    /// Writes one media's chunks kept in memory, if caching can write
    /// now (a prefetch keeps them instead of fetching them again).
    pub fn write_kept_of(&self, media: &Arc<Media>) {
        self.inner.runs.writer().write_kept_of(media);
    }

    /// Checks a media URL against the allowlist before anything else
    /// happens; a media open in this process was checked when it opened.
    pub async fn check(&self, url: &Url) -> Result<(), UpstreamError> {
        if self.inner.catalog.contains(url.as_str()) {
            return Ok(());
        }
        self.inner.runs.upstream().check(url).await
    }
}
