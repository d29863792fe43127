//! Downloads from the origin.
//!
//! A *run* is one upstream request for a stretch of missing chunks. It
//! claims the chunks it will fetch (so no other run or player fetches them
//! again), cuts the arriving bytes into those chunks as they come, hands
//! every complete chunk to the store, and extends itself while players read
//! towards it. It stops when no player has wanted its next chunk for the
//! read-ahead grace period, so an abandoned stream stops downloading.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use tracing::{debug, warn};

use crate::catalog::{redact_str, Catalog};
use crate::index::ChunkRow;
use crate::inflight::{ChunkFailure, InFlight};
use crate::media::{Media, Slot};
use crate::upstream::{Head, UpstreamError};
use crate::Shared;

/// Makes sure a run covers `index` if nobody fetches it yet. Returns false
/// when the chunk was already cached or downloading.
pub fn start(shared: &Arc<Shared>, media: &Arc<Media>, index: u64) -> bool {
    let Some(run) = Run::claim(shared, media, index) else {
        return false;
    };
    tokio::spawn(run.go(None));
    true
}

/// Starts a run whose first response (from the cold probe) is in hand.
pub fn start_with(
    shared: &Arc<Shared>,
    media: &Arc<Media>,
    index: u64,
    resp: reqwest::Response,
    head: Head,
) {
    if let Some(run) = Run::claim(shared, media, index) {
        tokio::spawn(run.go(Some((resp, head))));
    }
}

/// Called as a player reads chunk `at`: starts fetching the first missing
/// chunk within the read-ahead window, unless the run downloading the chunk
/// before it will extend to it anyway (one request per stretch, not one per
/// chunk).
pub fn read_ahead(shared: &Arc<Shared>, media: &Arc<Media>, at: u64) {
    let ra = shared.read_ahead_chunks();
    let last = at
        .saturating_add(ra)
        .min(media.chunk_count().saturating_sub(1));
    let mut before = media.slot(at);
    for index in at + 1..=last {
        let slot = media.slot(index);
        if slot.is_none() {
            if !matches!(before, Some(Slot::Pending(_))) {
                start(shared, media, index);
            }
            return;
        }
        before = slot;
    }
}

struct Run {
    shared: Arc<Shared>,
    media: Arc<Media>,
    claimed: VecDeque<(u64, Arc<InFlight>)>,
    /// Last byte of the stretch this run requests (inclusive).
    end_byte: u64,
    /// Next byte the body is expected to deliver.
    pos: u64,
    body: Option<reqwest::Response>,
    /// Bytes of the body before `pos` still to drop (an origin that ignored
    /// Range sends the whole media).
    skip: u64,
    /// Bytes received past the chunk being filled.
    carry: Option<Bytes>,
}

impl Run {
    fn claim(shared: &Arc<Shared>, media: &Arc<Media>, index: u64) -> Option<Run> {
        let ra = shared.read_ahead_chunks();
        // A run fetches a claimed chunk only once a player reads close
        // enough to want it; claiming a window keeps other runs away.
        let window_end = media.wanted_until(ra).unwrap_or(0).max(index + ra);
        let claimed: VecDeque<_> = media.claim(index, window_end).into();
        let (last_claimed, _) = claimed.back()?;
        // Ask for everything up to the next chunk somebody already has: one
        // request for the whole missing stretch.
        let end_byte = match media.next_taken(last_claimed + 1) {
            Some(taken) => media.chunk_start(taken) - 1,
            None => media.size() - 1,
        };
        Some(Run {
            shared: shared.clone(),
            media: media.clone(),
            pos: media.chunk_start(index),
            claimed,
            end_byte,
            body: None,
            skip: 0,
            carry: None,
        })
    }

    async fn go(mut self, first: Option<(reqwest::Response, Head)>) {
        if let Some((resp, head)) = first {
            if let Err(e) = self.accept(resp, &head) {
                self.body = None;
                debug!(error = %e, "first response unusable; asking again");
            }
        }
        let result = self.fetch_all().await;
        let failure = match result {
            Ok(()) => ChunkFailure::Cancelled,
            Err(f) => f,
        };
        for (index, chunk) in self.claimed.drain(..) {
            chunk.finish(Err(failure.clone()));
            self.media.release(index, &chunk);
        }
        if failure == ChunkFailure::Changed {
            Catalog::invalidate(&self.shared, &self.media).await;
        }
    }

    async fn fetch_all(&mut self) -> Result<(), ChunkFailure> {
        let ra = self.shared.read_ahead_chunks();
        let grace = self.shared.cfg.read_ahead_grace;
        let mut writing: Option<tokio::task::JoinHandle<()>> = None;
        while let Some((index, chunk)) = self.claimed.front().cloned() {
            if !wait_wanted(&self.media, index, ra, grace).await {
                debug!(index, "read-ahead no longer wanted; stopping");
                return Ok(());
            }
            self.fill(&chunk).await?;
            chunk.finish(Ok(()));
            self.claimed.pop_front();
            // One chunk written at a time per run: memory stays bounded when
            // the disk is slower than the origin.
            if let Some(w) = writing.take() {
                let _ = w.await;
            }
            writing = Some(tokio::spawn(persist(
                self.shared.clone(),
                self.media.clone(),
                index,
                chunk,
            )));
            self.extend(index, ra, grace).await;
        }
        Ok(())
    }

    /// Claims more chunks after `done` while players read towards them.
    async fn extend(&mut self, done: u64, ra: u64, grace: Duration) {
        let last_requested = self.end_byte / self.media.chunk_size();
        let from = self.claimed.back().map_or(done + 1, |(i, _)| i + 1);
        if from > last_requested {
            return;
        }
        if self.claimed.is_empty() && !wait_wanted(&self.media, from, ra, grace).await {
            return;
        }
        let until = self
            .media
            .wanted_until(ra)
            .unwrap_or(from)
            .min(last_requested);
        if until >= from {
            self.claimed.extend(self.media.claim(from, until));
        }
    }

    /// Fills one chunk from the body, resuming broken transfers.
    async fn fill(&mut self, chunk: &Arc<InFlight>) -> Result<(), ChunkFailure> {
        let mut failures = 0;
        while chunk.filled() < chunk.len() {
            let piece = match self.carry.take() {
                Some(p) => Ok(p),
                None => self.next_piece().await,
            };
            let mut piece = match piece {
                Ok(p) => p,
                Err(RunError::Changed) => return Err(ChunkFailure::Changed),
                Err(RunError::Upstream(e)) => {
                    failures += 1;
                    self.shared.metrics.upstream_errors.inc();
                    self.body = None;
                    self.skip = 0;
                    let permanent =
                        matches!(e, UpstreamError::Status(_) | UpstreamError::Denied(_));
                    if permanent || failures > self.shared.cfg.upstream_retries {
                        warn!(url = %redact_str(&self.media.row.url), pos = self.pos, error = %e, "upstream transfer failed");
                        return Err(ChunkFailure::Upstream(e.to_string()));
                    }
                    debug!(pos = self.pos, error = %e, "upstream transfer broke; resuming");
                    self.shared.metrics.upstream_resumes.inc();
                    tokio::time::sleep(Duration::from_millis(50 << failures.min(5))).await;
                    continue;
                }
            };
            failures = 0;
            let need = (chunk.len() - chunk.filled()) as usize;
            if piece.len() > need {
                self.carry = Some(piece.split_off(need));
            }
            self.pos += piece.len() as u64;
            chunk.push(piece);
        }
        Ok(())
    }

    /// The next bytes at `pos`, opening (or reopening) the request as needed.
    async fn next_piece(&mut self) -> Result<Bytes, RunError> {
        loop {
            if self.body.is_none() {
                self.open().await?;
            }
            let body = self.body.as_mut().expect("opened");
            match self.shared.upstream.next_piece(body).await? {
                None => {
                    return Err(RunError::Upstream(UpstreamError::Protocol(
                        "body ended early".into(),
                    )))
                }
                Some(mut piece) => {
                    self.shared
                        .metrics
                        .upstream_bytes
                        .inc_by(piece.len() as u64);
                    if self.skip > 0 {
                        let drop = self.skip.min(piece.len() as u64);
                        self.skip -= drop;
                        piece = piece.split_off(drop as usize);
                    }
                    if !piece.is_empty() {
                        return Ok(piece);
                    }
                }
            }
        }
    }

    async fn open(&mut self) -> Result<(), RunError> {
        let url = url::Url::parse(&self.media.row.url)
            .map_err(|e| RunError::Upstream(UpstreamError::BadUrl(e.to_string())))?;
        self.shared.metrics.upstream_requests.inc();
        let resp = self
            .shared
            .upstream
            .get(&url, Some((self.pos, Some(self.end_byte))))
            .await?;
        let head = Head::parse(resp.status(), resp.headers())?;
        self.accept(resp, &head)
    }

    /// Checks that a response carries this media version's bytes from `pos`.
    fn accept(&mut self, resp: reqwest::Response, head: &Head) -> Result<(), RunError> {
        let row = &self.media.row;
        let differs = |ours: &Option<String>, theirs: &Option<String>| matches!((ours, theirs), (Some(a), Some(b)) if a != b);
        if head.total.is_some_and(|t| t != row.size_bytes)
            || differs(&row.etag, &head.etag)
            || differs(&row.last_modified, &head.last_modified)
        {
            return Err(RunError::Changed);
        }
        match head.status {
            StatusCode::PARTIAL_CONTENT if head.start == self.pos => self.skip = 0,
            StatusCode::PARTIAL_CONTENT => {
                return Err(RunError::Upstream(UpstreamError::Protocol(format!(
                    "asked for byte {} and got byte {}",
                    self.pos, head.start
                ))))
            }
            // The origin ignored Range: drop what comes before `pos`.
            StatusCode::OK => self.skip = self.pos,
            s => return Err(RunError::Upstream(UpstreamError::BadStatus(s))),
        }
        self.body = Some(resp);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("the origin's media changed")]
    Changed,
    #[error(transparent)]
    Upstream(UpstreamError),
}

impl From<UpstreamError> for RunError {
    fn from(e: UpstreamError) -> RunError {
        RunError::Upstream(e)
    }
}

/// Waits until a player wants chunk `index`, for at most `grace`.
async fn wait_wanted(media: &Media, index: u64, ra: u64, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        let moved = media.moved.notified();
        if media.wanted(index, ra, grace) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline || media.is_gone() {
            return false;
        }
        // Playheads signal when they move; the timeout also covers the
        // moment a finished player's grace runs out.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), moved).await;
    }
}

/// Writes a complete chunk to the store and records it in the index. On
/// failure the chunk is simply not cached: players reading it already have
/// its bytes from memory, later ones fetch it again.
async fn persist(shared: Arc<Shared>, media: Arc<Media>, index: u64, chunk: Arc<InFlight>) {
    let Some(_ticket) = shared.writes.begin() else {
        // Shutting down: the chunk is not cached, nothing is half-written.
        media.release(index, &chunk);
        return;
    };
    let pieces = chunk.pieces();
    let store = shared.store.clone();
    let media_id = media.id();
    let written = tokio::task::spawn_blocking(move || store.write(media_id, index, &pieces)).await;
    let crc = match written {
        Ok(Ok(crc)) => crc,
        Ok(Err(e)) => {
            warn!(class = e.class.as_str(), url = %redact_str(&media.row.url), chunk = index, error = %e, "cache write failed");
            shared.metrics.write_error(e.class.as_str());
            media.release(index, &chunk);
            return;
        }
        Err(e) => {
            warn!(error = %e, "cache write task failed");
            media.release(index, &chunk);
            return;
        }
    };
    let row = ChunkRow {
        chunk_index: index,
        size_bytes: chunk.len(),
        crc32c: crc,
    };
    match shared.index.insert_chunk(media_id, row).await {
        Ok(()) => {
            shared.metrics.chunks_written.inc();
            media.set_cached(&chunk, row);
        }
        Err(e) => {
            if !media.is_gone() {
                warn!(error = %e, chunk = index, "cannot record chunk in the index");
            }
            shared.store.remove(media_id, index);
            media.release(index, &chunk);
        }
    }
}
