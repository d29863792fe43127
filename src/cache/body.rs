//! The body of one response: bytes of a media range, chunk by chunk, from
//! the cache files, from downloads in progress, or by starting downloads.
//!
//! Each response body is produced by a task feeding a small channel; when
//! the player goes away the channel closes and the task (and with it the
//! player's playhead) ends. Reading cached chunks is `cached.rs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::error::CacheError;
use super::inflight::InFlight;
use super::media::{Media, Slot};
pub(crate) use super::parts::{BodyPart, Player, Span};
use super::playhead::Playhead;
use super::run;
use super::run::Runs;
use super::sessions::{Sent, Sessions};
use super::settings::Settings;
use crate::metrics::Metrics;
use crate::store::outbox::{FilePiece, Outbox};
use crate::store::{ChunkFiles, Index};
use crate::upstream::{UpstreamError, PROGRESS};

/// Largest piece read from a chunk file at once: bounds memory per player.
pub const READ_PIECE: u64 = 131072;

/// Largest piece of a downloading chunk handed on at once: what a player
/// that does not read holds in its response's queue, and what spool counts
/// as sent to it (a seek preview that closes must not look like a player
/// reading on).
const FOLLOW_PIECE: usize = 64 * 1024;

/// How often a player waiting for a downloading chunk's byte looks again
/// whether a new request would bring it sooner (transfer rates become
/// known as bytes arrive).
const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How many times in a row a chunk may fail to come before the response
/// is cut (each attempt starts a new download).
const MAX_ATTEMPTS: u32 = 8;

/// A piece of a response body: bytes, or a stretch of a checked chunk file
/// the connection sends itself (`store/outbox.rs`), never read into spool.
#[derive(Debug)]
pub(crate) enum Piece {
    Bytes(Bytes),
    File(FilePiece),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::File(f) => f.len,
        }
    }
}

/// The sending side of a response body. An error cuts the body, so the
/// player sees an incomplete response rather than wrong bytes.
pub(crate) type BodyTx = mpsc::Sender<Result<Piece, CacheError>>;

/// Why a body ended early.
#[derive(Debug)]
pub(super) enum End {
    /// The player went away.
    ClientGone,
    /// The bytes could not be had.
    Failed(CacheError),
}

/// What response bodies are made with: the runs that fetch, the chunk
/// files and the index they read, the settings and metrics. Cheap to
/// clone.
#[derive(Clone)]
pub(super) struct Bodies {
    pub settings: Settings,
    /// Player sessions of titles, logged as one line each.
    pub sessions: Sessions,
    /// When chunks were read, batched for the index.
    pub accesses: super::access::Accesses,
    /// Media asked to be filled as players watch them.
    pub fills: super::fill::Fills,
    pub runs: Runs,
    pub index: Index,
    pub files: ChunkFiles,
    pub metrics: Arc<Metrics>,
}

/// Sends `parts` of a media into `tx` (a task per response); cuts the
/// body when a range cannot be served.
pub(super) async fn produce(
    cache: &Bodies,
    media: Arc<Media>,
    parts: Vec<BodyPart>,
    tx: BodyTx,
    player: Player,
) {
    let client = player.addr;
    let began = Instant::now();
    let metrics = &cache.metrics;
    metrics.active_streams.inc();
    let host = metrics.host(&media.url);
    metrics.streams_by_host.get_or_create(&host).inc();
    let ranges: Vec<Span> = parts
        .iter()
        .filter_map(|p| match p {
            BodyPart::Range(r) => Some(*r),
            BodyPart::Literal(_) => None,
        })
        .collect();
    let cs = media.chunk_size();
    let first = ranges.first().map_or(0, |r| r.start / cs);
    // Read-ahead past the requested range only for players that read on:
    // to the end of the media, or in consecutive ranges. A closed range
    // alone (a probe, a seek preview) fetches just what it asks for.
    let reads_on = ranges.iter().any(|r| r.end + 1 == media.size()) || media.continues(first);
    let limit = match reads_on {
        true => u64::MAX,
        false => ranges.iter().map(|r| r.end / cs).max().unwrap_or(first),
    };
    let playhead = media.playhead(first, limit, cache.settings.read_ahead_grace);
    let mut out = Sender {
        cache,
        media: &media,
        playhead: &playhead,
        limit,
        tx: &tx,
        touched: Vec::new(),
        sent: Sent::default(),
        since: player.since,
        file_pieces: player.outbox.is_some() && cache.settings.sendfile,
        taken: player.outbox.clone(),
        player: client.is_some(),
        fill_pending: client.is_some(),
    };
    let mut result = Ok(());
    for part in parts {
        result = match part {
            BodyPart::Literal(b) => out.send(b, "framing").await,
            BodyPart::Range(r) => out.range(r).await,
        };
        if result.is_err() {
            break;
        }
    }
    let touched = std::mem::take(&mut out.touched);
    let sent = out.sent;
    // One line per stream; a player hanging up (seeks, a closed tab) is
    // how streams usually end, not a problem.
    let ended = match &result {
        Ok(()) => "complete",
        Err(End::ClientGone) => "player left",
        Err(End::Failed(_)) => "cut",
    };
    let cut = matches!(result, Err(End::Failed(_)));
    // A title's segments: one line per player session (`sessions.rs`).
    let in_session = cache.sessions.stream_ended(client, &media.url, sent, cut);
    let url = crate::upstream::redact(&media.url);
    let bytes = sent.cache + sent.origin + sent.framing;
    let ms = began.elapsed().as_millis() as u64;
    if in_session {
        debug!(%url, bytes, from_cache = sent.cache, from_origin = sent.origin, ms, ended = %ended, "stream");
    } else {
        info!(%url, bytes, from_cache = sent.cache, from_origin = sent.origin, ms, ended = %ended, "stream");
    }
    if let Err(End::Failed(reason)) = result {
        warn!(media = media.id().map(|m| m.0), %reason, "response cut");
        // Bounded like every send: a player that takes nothing does not
        // hold the producer (its connection is closed for the same
        // silence).
        let timeout = cache.settings.write_timeout;
        let _ = tokio::time::timeout(timeout, tx.send(Err(reason))).await;
    }
    drop(playhead);
    metrics.active_streams.dec();
    metrics.streams_by_host.get_or_create(&host).dec();
    // When its chunks were read, and how much of it was watched:
    // batched, written by the upkeep.
    let watched = match client {
        Some(_) => sent.cache + sent.origin,
        None => 0,
    };
    if let (true, Some(id)) = (watched > 0, media.id()) {
        cache.accesses.served(id, watched);
    }
    if let (false, Some(id)) = (touched.is_empty(), media.id()) {
        if cache.accesses.record(id, touched) {
            cache.accesses.flush().await;
        }
    }
}

/// One response body being produced; its cached-chunk reads are
/// `cached.rs`.
pub(super) struct Sender<'a> {
    /// The last chunk this player may want (its range's end unless it
    /// reads on).
    pub limit: u64,
    pub cache: &'a Bodies,
    pub media: &'a Arc<Media>,
    pub playhead: &'a Playhead,
    pub tx: &'a BodyTx,
    /// Cached chunks read, for the index's access times.
    pub touched: Vec<u64>,
    pub sent: Sent,
    /// When the request arrived.
    pub since: Instant,
    /// Whether its connection sends file pieces itself (sendfile).
    pub file_pieces: bool,
    /// Its connection, which counts the bytes the player took.
    pub taken: Option<Outbox>,
    /// A player's request (not a prefetch or a fill reading).
    pub player: bool,
    /// Whether its media may still have to be asked to be filled
    /// (`fill.rs`); false once there is nothing left to ask.
    pub fill_pending: bool,
}

impl Sender<'_> {
    pub(super) async fn send(&mut self, bytes: Bytes, source: &'static str) -> Result<(), End> {
        self.send_piece(Piece::Bytes(bytes), source).await
    }

    pub(super) async fn send_piece(
        &mut self,
        piece: Piece,
        source: &'static str,
    ) -> Result<(), End> {
        let n = piece.len();
        // A player that takes no bytes for --write-timeout (stalled, or
        // gone without closing) frees what its stream holds. One whose
        // connection took bytes meanwhile is reading, however slowly: it
        // waits on (a piece takes a slow player a while).
        let timeout = self.cache.settings.write_timeout;
        let mut written = self.taken.as_ref().map(|o| o.written());
        let room = loop {
            match tokio::time::timeout(timeout, self.tx.reserve()).await {
                Ok(Ok(room)) => break room,
                Ok(Err(_)) => return Err(End::ClientGone),
                Err(_) => {
                    let now = self.taken.as_ref().map(|o| o.written());
                    if now != written {
                        written = now;
                        continue;
                    }
                    debug!(
                        media = self.media.id().map(|m| m.0),
                        "player took nothing for --write-timeout; stream closed"
                    );
                    self.cache.metrics.limited("write_timeout");
                    return Err(End::ClientGone);
                }
            }
        };
        room.send(Ok(piece));
        // Bytes spool reads for itself (a prefetch, a fill) reach no
        // player: they are no traffic served, and no first byte.
        if self.player {
            self.cache.metrics.served(source, n);
            if source != "framing" {
                // Watched long enough: the rest of it may be filled. Asked
                // per piece only until nothing is left to ask.
                if self.fill_pending {
                    self.fill_pending =
                        !self.cache.fills.watched(self.media, self.playhead.began());
                }
                if self.sent.cache + self.sent.origin == 0 {
                    self.cache.metrics.first_byte(source, self.since.elapsed());
                }
            }
        }
        match source {
            "cache" | "memory" => self.sent.cache += n as u64,
            "framing" => self.sent.framing += n as u64,
            _ => self.sent.origin += n as u64,
        }
        Ok(())
    }

    async fn range(&mut self, r: Span) -> Result<(), End> {
        let media = self.media;
        let mut pos = r.start;
        let mut attempts = 0;
        // Where the last attempt failed: only PROGRESS bytes after it
        // forgive the failures, as for resumed transfers (an origin that
        // breaks every answer after a few bytes must not earn endless new
        // downloads).
        let mut failed_at = pos;
        while pos <= r.end {
            if media.is_gone() {
                return Err(End::Failed(UpstreamError::Changed.into()));
            }
            let index = pos / media.chunk_size();
            self.playhead.set(index);
            // The chunk needed now first, so its run can cover the stretch
            // after it too; then read-ahead for what is left of the window.
            let runs = &self.cache.runs;
            if media.slot(index).is_none() {
                runs.start(media, index, run::split_for(media, index, pos));
            }
            let window = self.playhead.window_end(&runs.window(media));
            runs.read_ahead(media, index, window.min(self.limit));
            let start = media.chunk_start(index);
            let last = r.end.min(start + media.chunk_len(index) - 1);
            let before = pos;
            let outcome = match media.slot(index) {
                Some(Slot::Cached {
                    row,
                    verified,
                    written,
                }) => {
                    // Cached before this player began: a warm read.
                    let warm = written.is_none_or(|t| t < self.playhead.began());
                    self.send_cached(index, row, verified, warm, &mut pos, last)
                        .await
                }
                Some(Slot::Pending(chunk)) => {
                    match self.follow(index, chunk, &mut pos, last).await? {
                        Ok(()) => Ok(()),
                        Err(CacheError::Cancelled) => Err(Retry::Again),
                        Err(e) if e.is_changed() => return Err(End::Failed(e)),
                        Err(e) => Err(Retry::Failed(e)),
                    }
                }
                // Taken and released again before we looked (a run that
                // gave up, an unreadable file): look again.
                None => Err(Retry::Again),
            };
            if pos > before && pos - failed_at >= PROGRESS {
                attempts = 0;
            }
            match outcome {
                Ok(()) => {}
                Err(Retry::ClientGone) => return Err(End::ClientGone),
                // The cache could not serve what the origin still can: the
                // rest of this chunk comes straight from the origin, from the
                // exact byte already sent; later chunks go the usual way.
                Err(Retry::Broken) => self.passthrough(&mut pos, last).await?,
                Err(retry) => {
                    attempts += 1;
                    failed_at = pos;
                    // Give the task that failed the chunk time to release it.
                    tokio::time::sleep(std::time::Duration::from_millis(2 << attempts.min(6)))
                        .await;
                    if attempts > MAX_ATTEMPTS {
                        match retry {
                            Retry::Failed(e) => return Err(End::Failed(e)),
                            _ => self.passthrough(&mut pos, last).await?,
                        }
                        attempts = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `[pos, last]` of a downloading chunk as its bytes arrive; the
    /// inner result is why the chunk's bytes could not be had. Returns
    /// early (with `pos` short of `last`) once the chunk is written or
    /// gone, for the caller to look at the chunk's slot again.
    ///
    /// The download is held strongly only while this player looks for a
    /// byte, waits for it or hurries it; while a piece goes to the player,
    /// only weakly. A slow player (its socket full) thus does not keep a
    /// written chunk's buffers alive: once nothing else holds the download
    /// it is freed, and the player reads on from the chunk file. (Its
    /// playhead, not this reference, is what keeps its run going.)
    async fn follow(
        &mut self,
        index: u64,
        chunk: Arc<InFlight>,
        pos: &mut u64,
        last: u64,
    ) -> Result<Result<(), CacheError>, End> {
        let media = self.media;
        let runs = &self.cache.runs;
        let start = media.chunk_start(index);
        let source = if chunk.is_complete() {
            runs.writer().memcache().touch(media, index);
            "memory"
        } else {
            "download"
        };
        let held = Arc::downgrade(&chunk);
        let mut strong = Some(chunk);
        while *pos <= last {
            let Some(chunk) = strong.take().or_else(|| held.upgrade()) else {
                return Ok(Ok(()));
            };
            // Once the chunk is on disk, a player reads on from the file
            // (the caller picks it up), so the download's buffers can go.
            if source == "download" && chunk.is_complete() && media.is_cached(index) {
                return Ok(Ok(()));
            }
            let read = match chunk.try_read_at(*pos - start) {
                Ok(None) => {
                    // Not here yet: unless its transfer brings it soon, a
                    // new request fetches from this byte. Waiting for a
                    // transfer under way (not for a download place) asks
                    // for more streams.
                    if chunk.outruns(*pos - start) {
                        media.streams.waited();
                    }
                    runs.hurry(media, index, &chunk, *pos);
                    let wait = chunk.read_at(*pos - start);
                    let since = tokio::time::Instant::now();
                    let waited = tokio::time::timeout(RECHECK, wait).await;
                    self.playhead.waited(since.elapsed());
                    match waited {
                        Ok(r) => r,
                        // A player that hung up while waiting (for a slow
                        // origin, a download place) lets go of its place
                        // now, not at its next send.
                        Err(_) if self.tx.is_closed() => return Err(End::ClientGone),
                        Err(_) => {
                            strong = Some(chunk);
                            continue;
                        }
                    }
                }
                r => r,
            };
            drop(chunk);
            match read {
                Ok(Some(mut b)) => {
                    b.truncate(((last + 1 - *pos) as usize).min(FOLLOW_PIECE));
                    *pos += b.len() as u64;
                    let n = b.len() as u64;
                    self.send(b, source).await?;
                    self.playhead.advance(*pos, n, false);
                }
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(()))
    }

    /// Sends `[pos, last]` from a direct upstream range request, resuming
    /// from the byte reached when the transfer breaks.
    async fn passthrough(&mut self, pos: &mut u64, last: u64) -> Result<(), End> {
        debug!(
            media = self.media.id().map(|m| m.0),
            pos = *pos,
            last,
            "serving straight from the origin"
        );
        let mut body = self.cache.runs.body(self.media, *pos, last);
        loop {
            match body.next().await {
                Ok(Some(b)) => {
                    *pos += b.len() as u64;
                    let n = b.len() as u64;
                    self.send(b, "passthrough").await?;
                    self.playhead.advance(*pos, n, false);
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Failed(e.into())),
            }
        }
    }
}

pub(super) enum Retry {
    Again,
    /// The cached chunk is unusable: serve it from the origin directly.
    Broken,
    ClientGone,
    Failed(CacheError),
}
