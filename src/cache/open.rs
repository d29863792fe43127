//! Opening a media: found in memory, loaded from the index, or learned from
//! the origin on first use.
//!
//! A cold media is not probed with a separate request: the first ranged GET
//! for the player's position tells the size, type and validators *and*
//! starts the download, so a cold seek costs one origin round trip.

use std::sync::Arc;

use http::StatusCode;
use tracing::{debug, info, warn};
use url::Url;

use super::catalog::Catalog;
use super::media::Media;
use super::run::Runs;
use super::settings::Settings;
use crate::store::error::WriteStage;
use crate::store::{unix_now, IndexError, MediaRow};
use crate::store::{ChunkFiles, Index};
use crate::upstream::resume::refused;
use crate::upstream::{redact, Answer, Head, Upstream, UpstreamError, UpstreamRule};

/// What opening a URL gives.
pub(crate) enum Opened {
    /// A media of known size, served through the cache.
    Media(Arc<Media>),
    /// The origin does not tell the size: its response is relayed as it is.
    Passthrough(Box<(Answer, Head)>),
    /// The origin does not tell the size: the player's request is to be
    /// relayed to it as it is.
    Unsized,
}

/// Opens media: from memory, from the index, or from the origin. Cheap
/// to clone.
#[derive(Clone)]
pub(super) struct Opener {
    pub settings: Settings,
    pub catalog: Catalog,
    pub runs: Runs,
    pub index: Index,
    pub files: ChunkFiles,
    /// A title's segments are logged with its session, not one by one.
    pub titles: super::Titles,
}

impl Opener {
    fn upstream(&self) -> &Upstream {
        self.runs.upstream()
    }

    /// A player asked for `media` with `url`: a new one is asked with first
    /// (`UrlSet`), and the index row of a media known by its cache key
    /// records it (as `upstream::shown_names` shows it).
    fn reached(&self, media: &Media, url: &Url) {
        if !media.urls.offer(url) || *url == *media.url {
            return;
        }
        let Some(id) = media.id() else { return };
        let (index, shown) = (self.index.clone(), crate::upstream::shown_names(url));
        self.runs.tasks().spawn(async move {
            if let Err(e) = index.set_latest_url(id, shown).await {
                debug!(error = %e, "cannot record a media's latest URL");
            }
        });
    }

    /// Opens a media for a request whose fetches obey `rule`. `start` is
    /// the span the player wants (first byte, and last byte of a closed
    /// range) when it is known before the size is: a cold open then starts
    /// the download there.
    pub async fn open(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let catalog = &self.catalog;
        // A media is known by its key: the URL without the query
        // parameters the settings ignore (a presigned URL's signature).
        let keyed = self.upstream().cache_key(url);
        let key = keyed.as_ref().unwrap_or(url);
        if let Some(m) = catalog.used(key.as_str()) {
            if !m.is_stale(self.settings.revalidate_after) {
                m.widen(rule);
                self.reached(&m, url);
                return Ok(Opened::Media(m));
            }
        }
        let _opening = catalog.opening.enter(key.as_str()).await;
        self.open_locked(url, key, rule, start).await
    }

    async fn open_locked(
        &self,
        url: &Url,
        key: &Url,
        rule: &UpstreamRule,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let known = match self.catalog.used(key.as_str()) {
            Some(m) => {
                m.widen(rule);
                Some(m)
            }
            None => self.load(key, rule).await,
        };
        if let Some(media) = known {
            self.reached(&media, url);
            if !media.is_stale(self.settings.revalidate_after) || self.revalidate(&media).await {
                return Ok(Opened::Media(media));
            }
        }
        self.probe(url, key, rule, start).await
    }

    /// A media version from the index, if it knows one.
    async fn load(&self, url: &Url, rule: &UpstreamRule) -> Option<Arc<Media>> {
        let index = &self.index;
        let loaded = async {
            let Some(row) = index.media(url.as_str()).await? else {
                return Ok(None);
            };
            let Some(id) = row.media_id else {
                return Ok(None);
            };
            let chunks = index.chunks(id).await?;
            // In use again: not forgotten as unused meanwhile.
            index.touch(id, Vec::new()).await?;
            let media = Media::new(Arc::new(url.clone()), row, chunks).with_rule(rule.clone());
            Ok::<_, IndexError>(Some(Arc::new(media)))
        };
        match loaded.await {
            Ok(Some(media)) => {
                self.catalog.insert(&media);
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
    async fn revalidate(&self, media: &Arc<Media>) -> bool {
        let latest = media.urls.accepted();
        let answer = match self
            .upstream()
            .get(&latest, &media.upstream_rule(), Some((0, Some(0))))
            .await
        {
            Ok(resp) => resp.head(),
            Err(e) => Err(e),
        };
        let now = unix_now();
        let current = match answer.and_then(|head| media.version.check(&head, 0)) {
            Ok(_) => {
                media.urls.answered(&latest);
                true
            }
            Err(UpstreamError::Changed) => false,
            // A URL of a media known by its key that the origin refuses
            // (an expired signature) says nothing of the media: what is
            // cached stays, and a newer URL will fetch what is missing.
            Err(e) if *latest != *media.url && refused(&e) => {
                warn!(url = %redact(&media.url), error = %e, "the origin refused the URL of this media it accepted last; serving the cached copy");
                true
            }
            Err(UpstreamError::Status(s))
                if s == StatusCode::NOT_FOUND || s == StatusCode::GONE =>
            {
                false
            }
            Err(e) => {
                warn!(url = %redact(&media.url), error = %e, "revalidation failed; serving the cached copy");
                true
            }
        };
        if current {
            media.set_probed();
            if let Some(id) = media.id() {
                if let Err(e) = self.index.set_probed(id, now).await {
                    warn!(error = %e, "cannot record revalidation");
                }
            }
        } else {
            self.catalog.remove(media);
            self.runs.invalidate(media).await;
        }
        current
    }

    /// Learns a media from the origin with a ranged GET from the chunk that
    /// holds `start` (or a one-byte GET when the start is not known yet).
    async fn probe(
        &self,
        url: &Url,
        key: &Url,
        rule: &UpstreamRule,
        start: Option<(u64, Option<u64>)>,
    ) -> Result<Opened, UpstreamError> {
        let chunk_size = self.settings.chunk_size;
        let (start, end) = (start.map(|s| s.0), start.and_then(|s| s.1));
        let first_chunk = start.map(|s| s / chunk_size);
        // Like any miss, a cold seek into a chunk starts at the player's
        // byte; the chunk's head is fetched on the side.
        let split = start.map_or(0, |s| s % chunk_size);
        // A closed range is fetched to the end of its last chunk; an open
        // one to the end of its first chunk: read-ahead past it comes once
        // the player reads on.
        let range = match first_chunk {
            Some(c) => {
                let last = end.map_or(c, |e| e / chunk_size);
                let end = last
                    .checked_add(1)
                    .and_then(|after| after.checked_mul(chunk_size))
                    .map(|after| after - 1);
                (c * chunk_size + split, end)
            }
            None => (0, Some(0)),
        };
        // When the request left: its first bytes tell the origin's time to
        // first byte, which later requests are timed by.
        let asked = tokio::time::Instant::now();
        let resp = self.upstream().get(url, rule, Some(range)).await?;
        let head = resp.head()?;
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
        let max = self.settings.max_media_size;
        if size > max {
            warn!(url = %redact(url), size, max, "origin claims a media larger than --max-media-size");
            return Err(UpstreamError::Protocol(format!(
                "the origin claims {size} bytes, more than --max-media-size ({max})"
            )));
        }
        let row = MediaRow {
            media_id: None,
            url: key.as_str().to_owned(),
            size_bytes: size,
            chunk_size_bytes: chunk_size,
            content_type: head.content_type.clone(),
            content_encoding: head.content_encoding.clone(),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            accepts_ranges: head.status != StatusCode::OK,
            probed_unix: unix_now(),
        };
        let media = self.record(key, rule, row).await;
        self.reached(&media, url);
        // Its probe was answered (that URL, whatever another request
        // offered meanwhile).
        media.urls.answered(&Arc::new(url.clone()));
        let etag = head.etag.as_deref().unwrap_or("-");
        let ranges = media.row.accepts_ranges;
        if self.titles.member(url).is_some() {
            debug!(url = %redact(url), size, etag = %etag, ranges, "new media");
        } else {
            info!(url = %redact(url), size, etag = %etag, ranges, "new media");
        }
        if head.status == StatusCode::OK && first_chunk.is_some() {
            // The origin ignores Range: the media is known now, but this
            // player's position may be too far to reach by skipping.
            self.upstream().may_skip(range.0)?;
        }
        if let (Some(c), true) = (first_chunk, size > 0) {
            if head.status != StatusCode::RANGE_NOT_SATISFIABLE && c < media.chunk_count() {
                self.runs
                    .start_with(&media, c, split, range.1, (asked, resp, head));
                // A player starting at the beginning: the index may lie
                // elsewhere (an MP4's moov at the end), and is fetched now.
                if c == 0 && split == 0 && self.settings.index_first {
                    let runs = self.runs.clone();
                    let tasks = runs.tasks().clone();
                    tasks.spawn(super::index_first::index_first(runs, media.clone()));
                }
            }
        }
        Ok(Opened::Media(media))
    }

    /// Records a new media version in the index (dropping an older one and
    /// its files) and in memory. When the index cannot be written, the media
    /// still streams, without an id: nothing of it is written.
    async fn record(&self, url: &Url, rule: &UpstreamRule, mut row: MediaRow) -> Arc<Media> {
        let recorded = match self.files.injected(WriteStage::MediaRow) {
            Some(e) => Err(IndexError::Injected(e)),
            None => self.index.replace_media(row.clone()).await,
        };
        match recorded {
            Ok((id, old)) => {
                row.media_id = Some(id);
                if let Some(old) = old {
                    self.files.remove_media(old).await;
                }
            }
            Err(e) => {
                let class = e.write_class();
                warn!(
                    class = %class.as_str(),
                    url = %redact(url),
                    error = %e,
                    "cannot record media in the index; streaming it uncached"
                );
                self.runs.writer().index_failed(class).await;
            }
        }
        let media =
            Arc::new(Media::new(Arc::new(url.clone()), row, Vec::new()).with_rule(rule.clone()));
        self.catalog.insert(&media);
        media
    }
}
