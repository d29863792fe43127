//! What download runs fetch with: the origin client, the
//! `--max-downloads` places, the Writer, the read-ahead policy, and how far
//! a run's next request asks (request sizing). Shared by the `Runs` handle
//! (`run.rs`) and the run driver (`driver.rs`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use super::media::Media;
use super::persist::Writer;
use super::readahead::{Policy, Window};
use crate::history::{Event, Kind};
use crate::store::{ChunkFiles, Index};
use crate::upstream::{redact, ResumingBody, Upstream};

/// How often a run waiting for its origin's place looks whether a player
/// reached its chunk meanwhile.
const URGENT_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) struct Fetcher {
    pub upstream: Upstream,
    /// One permit per download run transferring (`--max-downloads`).
    pub downloads: Arc<tokio::sync::Semaphore>,
    pub writer: Writer,
    pub index: Index,
    pub files: ChunkFiles,
    /// How far players are read ahead of (`readahead.rs`).
    pub policy: Policy,
    /// Runs, and the other tasks started for players (`tasks.rs`).
    pub tasks: super::tasks::Tasks,
}

impl Fetcher {
    /// A media's read-ahead window (`readahead.rs`), looked up each time:
    /// a media's byte rate may become known.
    pub fn window(&self, media: &Media) -> Window {
        media.window(&self.policy)
    }

    /// The last byte to ask the origin for, for a stretch from chunk
    /// `index`: up to the next chunk somebody already has, as far as the
    /// read-ahead windows of the players that want `index` reach now (not
    /// those of players elsewhere in the media), and at least `grow` chunks
    /// past `index` (a run that is read on asks for twice as much each
    /// time, up to `--read-ahead`, and never more than its players have
    /// read), never past the end of their ranges.
    /// `own` is a chunk the asking run claimed itself (not in its way).
    pub fn stretch_end(&self, media: &Media, index: u64, grow: u64, own: Option<u64>) -> u64 {
        let taken = match media.next_taken(index + 1) {
            Some(t) if Some(t) == own => media.next_taken(t + 1),
            t => t,
        };
        let taken_end = match taken {
            Some(taken) => media.chunk_start(taken) - 1,
            None => media.size() - 1,
        };
        let w = self.window(media);
        let mut last = w.stretch_last(media.heads(), index, grow);
        // Over several streams, each request takes its share of the window,
        // and near the media's end its share of what is left (so the
        // streams end together, not one of them alone).
        let streams = self.streams(media);
        if streams > 1 {
            let left = media.chunk_count().saturating_sub(index);
            let stride = w.stride(streams).min(left.div_ceil(streams as u64));
            last = last.min(index.saturating_add(stride.max(1) - 1));
        }
        match last.checked_add(1) {
            Some(after) if after < media.chunk_count() => {
                taken_end.min(media.chunk_start(after) - 1)
            }
            _ => taken_end,
        }
    }

    /// How many streams the chunks ahead of a media's players come over
    /// now (`readahead::streams`): what its origin allows, one transfer's
    /// measured rate against what its players take.
    pub fn streams(&self, media: &Media) -> usize {
        // A warm read asks this for every chunk: a media nothing was
        // fetched for yet has one stream, whatever else says, and the
        // origin is asked only when more than one is wanted.
        let Some(rate) = media.pace().measured_rate() else {
            return 1;
        };
        let origins = self.upstream.origins();
        let max = origins.max_streams().min(self.window(media).max_streams());
        let want =
            super::readahead::streams(max, Some(rate), media.byte_rate(), media.streams.outrun());
        match want > 1 {
            true => want.min(origins.streams(&media.url)),
            false => 1,
        }
    }

    /// A run's places for chunk `index` (`driver.rs`): its origin's, then
    /// a `--max-downloads` one. A chunk a player is at does not wait for
    /// its origin's place (it takes one if one is free), and a run that
    /// waits looks again whether a player reached its chunk meanwhile (the
    /// wait keeps its turn). None when the downloads are closed.
    pub async fn places(
        &self,
        media: &Arc<Media>,
        index: u64,
    ) -> Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
        let origins = self.upstream.origins();
        let url = &media.url;
        let origin = match media.read_at(index) {
            true => origins.try_connection(url),
            false => {
                let wait = origins.connection(url);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        // A place given meanwhile is taken, not left for
                        // `try_connection` to miss.
                        biased;
                        p = &mut wait => break Some(p),
                        () = tokio::time::sleep(URGENT_RECHECK) => {
                            if media.read_at(index) {
                                break origins.try_connection(url);
                            }
                        }
                    }
                }
            }
        };
        let permit = match self.downloads.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.upstream.metrics().limited("max_downloads");
                self.downloads.clone().acquire_owned().await.ok()?
            }
        };
        Some((permit, origin))
    }

    /// The bytes `[pos, end]` of a media from the origin, resumed on breaks.
    pub fn body(&self, media: &Media, pos: u64, end: u64) -> ResumingBody {
        ResumingBody::new(
            &self.upstream,
            &media.urls,
            media.upstream_rule(),
            &media.version,
            pos,
            end,
        )
    }

    /// A few bytes of a media straight from the origin (not cached).
    pub async fn fetch_small(&self, media: &Media, r: std::ops::Range<u64>) -> Option<Bytes> {
        if r.start >= r.end || r.end > media.size() || r.end - r.start > 1 << 20 {
            return None;
        }
        let mut body = self.body(media, r.start, r.end - 1);
        let mut got = bytes::BytesMut::new();
        while let Some(piece) = body.next().await.ok()? {
            got.extend_from_slice(&piece);
        }
        Some(got.freeze())
    }

    /// Drops a media version whose origin copy changed: downloads of it
    /// stop, its rows and chunk files go, and the next player probes anew.
    pub async fn invalidate(&self, media: &Arc<Media>) {
        if !media.mark_gone() {
            return;
        }
        warn!(url = %redact(&media.url), "origin copy changed; dropping cached chunks");
        let Some(id) = media.id() else { return };
        let e = Event::new(Kind::MediaChanged, crate::store::unix_now())
            .media(id.0)
            .url(redact(&media.url));
        self.upstream.metrics().history.record(e);
        if let Err(e) = self.index.remove_media(id).await {
            warn!(error = %e, "cannot remove media from the index");
        }
        self.files.remove_media(id).await;
    }
}
