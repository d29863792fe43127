//! The media spool knows: found in memory, loaded from the index, or
//! learned from the origin on first use.
//!
//! A cold media is not probed with a separate request: the first ranged GET
//! for the player's position tells the size, type and validators *and*
//! starts the download, so a cold seek costs one origin round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use tracing::{info, warn};
use url::Url;

use crate::cache::inflight::ChunkFailure;
use crate::cache::media::Media;
use crate::cache::run;
use crate::store::index::{unix_now, MediaRow};
use crate::upstream::{Head, UpstreamError};
use crate::Shared;

/// What opening a URL gives.
pub enum Opened {
    /// A media of known size, served through the cache.
    Media(Arc<Media>),
    /// The origin does not tell the size: its response is relayed as it is.
    Passthrough(Box<(reqwest::Response, Head)>),
    /// The origin does not tell the size: the player's request is to be
    /// relayed to it as it is.
    Unsized,
}

#[derive(Default)]
pub struct Catalog {
    media: Mutex<HashMap<String, Arc<Media>>>,
    /// One opener per URL at a time, so concurrent cold players share one
    /// origin request.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Catalog {
    /// The media version with this id, if it is open.
    pub fn by_id(&self, media_id: i64) -> Option<Arc<Media>> {
        let map = self.media.lock().unwrap();
        map.values().find(|m| m.id() == media_id).cloned()
    }

    pub fn contains(&self, url: &str) -> bool {
        self.media.lock().unwrap().contains_key(url)
    }

    fn cached(&self, url: &str) -> Option<Arc<Media>> {
        let m = self.media.lock().unwrap().get(url).cloned();
        if let Some(m) = &m {
            m.mark_used();
        }
        m
    }

    /// Forgets media nobody used for `idle` (their rows and files stay; the
    /// next player loads them from the index again), so memory does not
    /// grow with every URL ever played.
    pub fn sweep(&self, idle: std::time::Duration) -> usize {
        // Gates left behind by an open whose player hung up mid-way.
        self.opening
            .lock()
            .unwrap()
            .retain(|_, g| Arc::strong_count(g) > 1);
        let mut map = self.media.lock().unwrap();
        let before = map.len();
        map.retain(|_, m| !m.is_idle(idle));
        before - map.len()
    }

    /// Opens a media. `start` is the span the player wants (first byte, and
    /// last byte of a closed range) when it is known before the size is: a
    /// cold open then starts the download there.
    pub async fn open(
        shared: &Arc<Shared>,
        url: &Url,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let key = url.as_str();
        if let Some(m) = shared.catalog.cached(key) {
            if !m.is_stale(shared.cfg.revalidate_after) {
                return Ok(Opened::Media(m));
            }
        }
        let gate = shared
            .catalog
            .opening
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .clone();
        let guard = gate.clone().lock_owned().await;
        let opened = Catalog::open_locked(shared, url, start).await;
        drop(guard);
        // The gate goes once nobody else waits on it (the map and this
        // function hold the only references).
        let mut opening = shared.catalog.opening.lock().unwrap();
        if opening
            .get(key)
            .is_some_and(|g| Arc::ptr_eq(g, &gate) && Arc::strong_count(&gate) <= 2)
        {
            opening.remove(key);
        }
        opened
    }

    async fn open_locked(
        shared: &Arc<Shared>,
        url: &Url,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let known = match shared.catalog.cached(url.as_str()) {
            Some(m) => Some(m),
            None => Catalog::load(shared, url).await,
        };
        if let Some(media) = known {
            if !media.is_stale(shared.cfg.revalidate_after)
                || Catalog::revalidate(shared, url, &media).await
            {
                return Ok(Opened::Media(media));
            }
        }
        Catalog::probe(shared, url, start).await
    }

    /// A media version from the index, if it knows one.
    async fn load(shared: &Arc<Shared>, url: &Url) -> Option<Arc<Media>> {
        let loaded = async {
            let Some(row) = shared.index.media(url.as_str()).await? else {
                return Ok(None);
            };
            let chunks = shared.index.chunks(row.media_id).await?;
            Ok::<_, crate::store::index::IndexError>(Some(Arc::new(Media::new(row, chunks))))
        };
        match loaded.await {
            Ok(Some(media)) => {
                shared.catalog.insert(&media);
                Some(media)
            }
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "index read failed; asking the origin");
                None
            }
        }
    }

    /// Asks the origin (one byte) whether a media version is still current.
    /// Returns false when it changed (and drops it). When the origin cannot
    /// answer, the cached copy goes on being served.
    async fn revalidate(shared: &Arc<Shared>, url: &Url, media: &Arc<Media>) -> bool {
        shared.metrics.upstream_requests.inc();
        let answer = match shared.upstream.get(url, Some((0, Some(0)))).await {
            Ok(resp) => Head::parse(resp.status(), resp.headers()),
            Err(e) => Err(e),
        };
        let now = unix_now();
        let current = match answer {
            Ok(head) => match run::check_response(media, &head, 0) {
                Ok(_) => true,
                Err(run::RunError::Changed) => false,
                Err(run::RunError::Upstream(e)) => {
                    warn!(url = %redact(url), error = %e, "revalidation failed; serving the cached copy");
                    true
                }
            },
            Err(UpstreamError::Status(s))
                if s == StatusCode::NOT_FOUND || s == StatusCode::GONE =>
            {
                false
            }
            Err(e) => {
                warn!(url = %redact(url), error = %e, "revalidation failed; serving the cached copy");
                true
            }
        };
        if current {
            media.set_probed(now);
            if let Err(e) = shared.index.set_probed(media.id(), now).await {
                warn!(error = %e, "cannot record revalidation");
            }
        } else {
            Catalog::invalidate(shared, media).await;
        }
        current
    }

    /// Learns a media from the origin with a ranged GET from the chunk that
    /// holds `start` (or a one-byte GET when the start is not known yet).
    async fn probe(
        shared: &Arc<Shared>,
        url: &Url,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let chunk_size = shared.cfg.chunk_size;
        let (start, end) = (start.map(|s| s.0), start.and_then(|s| s.1));
        let first_chunk = start.map(|s| s / chunk_size);
        // Like any miss, a cold seek far into a chunk starts at the
        // player's byte; the chunk's head is fetched on the side.
        let split = start.map_or(0, |s| run::split_at(s % chunk_size));
        // A closed range is fetched to the end of its last chunk only.
        let range = match first_chunk {
            Some(c) => (
                c * chunk_size + split,
                end.and_then(|e| (e / chunk_size).checked_add(1)?.checked_mul(chunk_size))
                    .map(|after| after - 1),
            ),
            None => (0, Some(0)),
        };
        shared.metrics.upstream_requests.inc();
        let resp = shared.upstream.get(url, Some(range)).await?;
        let head = Head::parse(resp.status(), resp.headers())?;
        let Some(size) = head.total else {
            if head.status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(UpstreamError::Protocol("416 without a size".into()));
            }
            // Without a size there are no chunks to cache. A 200 is the whole
            // body, fine for any player (a server may ignore Range); a 206
            // answers spool's probe, not the player: the player's own
            // request goes to the origin as it is.
            if head.status == StatusCode::OK {
                return Ok(Opened::Passthrough(Box::new((resp, head))));
            }
            return Ok(Opened::Unsized);
        };
        let row = MediaRow {
            media_id: 0,
            url: url.as_str().to_owned(),
            size_bytes: size,
            chunk_size_bytes: chunk_size,
            content_type: head.content_type.clone(),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            accepts_ranges: head.status != StatusCode::OK,
            probed_unix: unix_now(),
        };
        let media = Catalog::record(shared, row).await;
        info!(
            url = %redact(url),
            size,
            etag = head.etag.as_deref().unwrap_or("-"),
            ranges = media.row.accepts_ranges,
            "new media"
        );
        if let (Some(c), true) = (first_chunk, size > 0) {
            if head.status != StatusCode::RANGE_NOT_SATISFIABLE && c < media.chunk_count() {
                run::start_with(shared, &media, c, split, range.1, resp, head);
            }
        }
        Ok(Opened::Media(media))
    }

    /// Records a new media version in the index (dropping an older one and
    /// its files) and in memory. When the index cannot be written, the media
    /// still streams: it gets an id no index row will match, and its chunks
    /// fail to be recorded.
    async fn record(shared: &Arc<Shared>, mut row: MediaRow) -> Arc<Media> {
        match shared.index.replace_media(row.clone()).await {
            Ok((id, old)) => {
                row.media_id = id;
                if let Some(old) = old {
                    shared.store.remove_media(old);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot record media in the index; streaming uncached");
                row.media_id = -1;
            }
        }
        let media = Arc::new(Media::new(row, Vec::new()));
        shared.catalog.insert(&media);
        media
    }

    fn insert(&self, media: &Arc<Media>) {
        self.media
            .lock()
            .unwrap()
            .insert(media.row.url.clone(), media.clone());
    }

    /// Drops a media version whose origin copy changed: downloads of it
    /// stop, its chunks are deleted, and the next player probes anew.
    pub async fn invalidate(shared: &Arc<Shared>, media: &Arc<Media>) {
        if media.is_gone() {
            return;
        }
        {
            let mut map = shared.catalog.media.lock().unwrap();
            if map
                .get(&media.row.url)
                .is_some_and(|m| Arc::ptr_eq(m, media))
            {
                map.remove(&media.row.url);
            }
        }
        for chunk in media.mark_gone() {
            chunk.fail(ChunkFailure::Changed);
        }
        warn!(url = %redact_str(&media.row.url), "origin copy changed; dropping cached chunks");
        if let Err(e) = shared.index.remove_media(media.id()).await {
            warn!(error = %e, "cannot remove media from the index");
        }
        shared.store.remove_media(media.id());
    }
}

/// A URL for logs: the query string may hold credentials.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("REDACTED"));
    }
    let _ = u.set_password(None);
    u.to_string()
}

pub fn redact_str(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "<bad url>".into(), |u| redact(&u))
}
