//! Downloads from the origin.
//!
//! A *run* is one upstream transfer for a stretch of missing chunks. It
//! claims each chunk just before it fetches it (so no other run or player
//! fetches it again), cuts the arriving bytes into chunks as they come,
//! and hands every complete chunk to the store.
//!
//! What a run asks the origin for follows the players: at first the chunk
//! a player reads, then as far as the players' read-ahead windows reach
//! (a window grows with what its player read, up to `--read-ahead`), with
//! a new request for the next stretch sent while the last one is still
//! read. It stops when no player has wanted its next chunk for the
//! read-ahead grace period, so an abandoned stream stops downloading.
//!
//! A player never waits behind read-ahead: when it waits for a byte that a
//! running transfer would reach later than a new request could (judged by
//! that transfer's rate and the origin's time to first byte), the chunk's
//! part is cut at the player's byte and a new run starts there
//! (`Runs::hurry`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::CacheError;
use super::inflight::{Feed, InFlight};
use super::media::{Media, Slot};
use super::persist::Writer;
use super::readahead::{Policy, Window};
use crate::store::{ChunkFiles, Index};
use crate::upstream::{redact, Head, ResumingBody, Upstream, UpstreamError};

/// Complete chunks of one run waiting for the disk at most.
const WRITES_IN_FLIGHT: usize = 3;

/// Bytes of a big arriving piece put into its chunk first, before the run
/// lets waiting players take them (body.rs sends a downloading chunk in
/// pieces of this size too).
const FIRST_PUSH: usize = 64 * 1024;

/// Where a run for a miss at `pos` starts within chunk `index`: at the
/// player's byte. The bytes before it come from a second, small request
/// once the player has its first bytes.
pub fn split_for(media: &Media, index: u64, pos: u64) -> u64 {
    pos.saturating_sub(media.chunk_start(index))
}

/// Starts and runs downloads. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Runs {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    /// One permit per download run transferring (`--max-downloads`).
    downloads: Arc<tokio::sync::Semaphore>,
    writer: Writer,
    index: Index,
    files: ChunkFiles,
    /// How far players are read ahead of (`readahead.rs`).
    policy: Policy,
    /// Runs, and the other tasks started for players (`tasks.rs`).
    tasks: super::tasks::Tasks,
}

impl Runs {
    pub fn new(
        upstream: Upstream,
        writer: Writer,
        index: Index,
        files: ChunkFiles,
        policy: Policy,
        max_downloads: usize,
    ) -> Runs {
        Runs {
            inner: Arc::new(Inner {
                downloads: Arc::new(tokio::sync::Semaphore::new(max_downloads.max(1))),
                upstream,
                writer,
                index,
                files,
                policy,
                tasks: super::tasks::Tasks::default(),
            }),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    pub fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// The tasks started for players, which shutdown ends.
    pub fn tasks(&self) -> &super::tasks::Tasks {
        &self.inner.tasks
    }

    /// A media's read-ahead window (`readahead.rs`), looked up each time:
    /// a media's byte rate may become known.
    pub fn window(&self, media: &Media) -> Window {
        media.window(&self.inner.policy)
    }

    /// Starts a run at chunk `index` (at byte `split` within it) if nobody
    /// fetches that chunk yet. Returns false when it was cached or
    /// downloading.
    pub fn start(&self, media: &Arc<Media>, index: u64, split: u64) -> bool {
        let Some(run) = self.claim(media, index, split) else {
            return false;
        };
        debug!(
            media = ?media.id(),
            index,
            split,
            end = run.body.end(),
            "run starts"
        );
        self.inner.tasks.spawn(run.go(None));
        true
    }

    /// Starts a run whose first response (from the cold probe) is in hand,
    /// with when its request left.
    pub fn start_with(
        &self,
        media: &Arc<Media>,
        index: u64,
        split: u64,
        requested_end: Option<u64>,
        (asked, resp, head): (Instant, reqwest::Response, Head),
    ) {
        if let Some(mut run) = self.claim(media, index, split) {
            run.feed.requested_at(asked);
            // The probe asked for what its player wants (a closed range to
            // its last chunk, an open one to the end of its first chunk),
            // which its response delivers.
            if let Some(end) = requested_end {
                let end = end.min(media.size() - 1);
                run.body = self.body(media, run.body.first(), end);
                run.feed.set_end(end);
            }
            self.inner.tasks.spawn(run.go(Some((resp, head))));
        }
    }

    /// Called as a player reads chunk `at`: starts fetching the first
    /// missing chunk within its read-ahead window (`window_end`, its last
    /// chunk), unless the run downloading the chunk before it will go on
    /// to it anyway (one request per stretch, not one per chunk).
    pub fn read_ahead(&self, media: &Arc<Media>, at: u64, window_end: u64) {
        let last = window_end.min(media.chunk_count().saturating_sub(1));
        let mut before = media.slot(at);
        for index in at + 1..=last {
            let slot = media.slot(index);
            if slot.is_none() {
                if !matches!(before, Some(Slot::Pending(_))) {
                    self.start(media, index, 0);
                }
                return;
            }
            before = slot;
        }
    }

    /// A player waits for byte `pos` of chunk `index`, which is downloading:
    /// when the transfer that fills it would bring it later than a new
    /// request could, the chunk's part is cut there and a new run fetches
    /// from `pos` on. A cut run's stretch (the chunks after this one) goes
    /// to the new run.
    pub fn hurry(&self, media: &Arc<Media>, index: u64, chunk: &Arc<InFlight>, pos: u64) {
        let start = media.chunk_start(index);
        let off = pos - start;
        let Some(behind) = chunk.behind(off) else {
            return;
        };
        if behind.feed.is_troubled() {
            return;
        }
        let pace = media.pace();
        let eta = behind.feed.eta(pos, pace);
        // A new request brings its first byte after about one time to first
        // byte; only a clearly later arrival is worth a second request.
        if eta <= pace.lead() {
            return;
        }
        let feed = Feed::new(pos, start + behind.limit - 1);
        let Some((old, limit)) = chunk.cut(off, feed.clone()) else {
            return;
        };
        let continues = limit == chunk.len();
        if continues {
            // The new run goes on where the cut one would have.
            feed.set_end(old.end().max(start + limit - 1));
            // Unless the cut part is the one the old run claimed next (it
            // fills the part before the cut when it gets there).
            let mut next = old.next.lock().unwrap();
            if next.as_ref().is_some_and(|(i, _)| *i != index) {
                *feed.next.lock().unwrap() = next.take();
            }
        }
        self.inner.upstream.metrics().seek_requests.inc();
        debug!(
            media = ?media.id(),
            index,
            pos,
            behind = old.at(),
            eta_ms = eta.as_millis() as u64,
            "a player waits ahead of a transfer: new request from its byte"
        );
        let run = self.run(media, feed, (index, off, chunk.clone()), continues);
        self.inner.tasks.spawn(run.go(None));
    }

    /// Drops a media version whose origin copy changed: downloads of it
    /// stop, its rows and chunk files go, and the next player probes anew.
    pub async fn invalidate(&self, media: &Arc<Media>) {
        if !media.mark_gone() {
            return;
        }
        warn!(url = %redact(&media.url), "origin copy changed; dropping cached chunks");
        let Some(id) = media.id() else { return };
        if let Err(e) = self.inner.index.remove_media(id).await {
            warn!(error = %e, "cannot remove media from the index");
        }
        self.inner.files.remove_media(id).await;
    }

    /// The last byte to ask the origin for, for a stretch from chunk
    /// `index`: up to the next chunk somebody already has, as far as the
    /// read-ahead windows of the players that want `index` reach now (not
    /// those of players elsewhere in the media), and at least `grow` chunks
    /// past `index` (a run that is read on asks for twice as much each
    /// time, up to `--read-ahead`, and never more than its players have
    /// read), never past the end of their ranges.
    /// `own` is a chunk the asking run claimed itself (not in its way).
    fn stretch_end(&self, media: &Media, index: u64, grow: u64, own: Option<u64>) -> u64 {
        let taken = match media.next_taken(index + 1) {
            Some(t) if Some(t) == own => media.next_taken(t + 1),
            t => t,
        };
        let taken_end = match taken {
            Some(taken) => media.chunk_start(taken) - 1,
            None => media.size() - 1,
        };
        let last = self.window(media).stretch_last(media.heads(), index, grow);
        match last.checked_add(1) {
            Some(after) if after < media.chunk_count() => {
                taken_end.min(media.chunk_start(after) - 1)
            }
            _ => taken_end,
        }
    }

    fn claim(&self, media: &Arc<Media>, index: u64, split: u64) -> Option<Run> {
        let start = media.chunk_start(index) + split;
        let feed = Feed::new(start, u64::MAX);
        let head = (split > 0).then(|| Feed::new(media.chunk_start(index), start - 1));
        let (index, chunk) = media
            .claim(index, index, split, &feed, head.clone())
            .pop()?;
        let end = self.stretch_end(media, index, 0, None);
        feed.set_end(end);
        if let Some(head) = head {
            // The player waits for the bytes from `split` on: let its first
            // bytes arrive before the head competes with them.
            let run = self.run(media, head, (index, 0, chunk.clone()), false);
            let (chunk, split) = (chunk.clone(), split);
            self.inner.tasks.spawn(async move {
                let _ = chunk.read_at(split).await;
                run.go(None).await
            });
        }
        Some(self.run(media, feed, (index, split, chunk), true))
    }

    /// A run that fills `part` of chunk `index` (its `current`) with the
    /// bytes `feed` stands for, from where the feed is to its end.
    fn run(
        &self,
        media: &Arc<Media>,
        feed: Arc<Feed>,
        current: (u64, u64, Arc<InFlight>),
        continues: bool,
    ) -> Run {
        self.inner.upstream.metrics().active_downloads.inc();
        Run {
            runs: self.clone(),
            media: media.clone(),
            body: self.body(media, feed.at(), feed.end()),
            feed,
            current: Some(current),
            continues,
            carry: None,
            place: None,
            following: None,
        }
    }

    /// Fetches the chunks holding `ranges` (a media's index) that nobody
    /// fetches yet, whether or not a player wants them now; each is cached
    /// whole.
    pub fn fetch_region(&self, media: &Arc<Media>, ranges: &[std::ops::Range<u64>]) {
        let cs = media.chunk_size();
        for r in ranges
            .iter()
            .filter(|r| r.start < r.end && r.end <= media.size())
        {
            let first = r.start / cs;
            for index in first..=(r.end - 1) / cs {
                let split = match index == first {
                    true => r.start - media.chunk_start(index),
                    false => 0,
                };
                let Some(mut run) = self.claim(media, index, split) else {
                    continue;
                };
                let end = media.chunk_start(index) + media.chunk_len(index) - 1;
                run.continues = false;
                run.body = self.body(media, run.body.first(), end);
                run.feed.set_end(end);
                self.inner.tasks.spawn(run.go(None));
            }
        }
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

    /// The bytes `[pos, end]` of a media from the origin, resumed on breaks.
    pub fn body(&self, media: &Media, pos: u64, end: u64) -> ResumingBody {
        ResumingBody::new(
            &self.inner.upstream,
            &media.url,
            media.upstream_rule(),
            &media.version,
            pos,
            end,
        )
    }
}

struct Run {
    runs: Runs,
    media: Arc<Media>,
    /// Where this transfer is, for players deciding whether to wait for it;
    /// it also holds the chunk claimed next.
    feed: Arc<Feed>,
    /// The chunk being filled, and the start of the part of it this run
    /// fills.
    current: Option<(u64, u64, Arc<InFlight>)>,
    /// Whether the run goes on past the part it fills (false for a chunk's
    /// head and for parts that end before their chunk does).
    continues: bool,
    /// The stretch this run requests.
    body: ResumingBody,
    /// The request for the stretch after `body`, sent early.
    following: Option<JoinHandle<ResumingBody>>,
    /// Bytes received past the chunk being filled.
    carry: Option<Bytes>,
    /// A `--max-downloads` place, held while bytes are transferred (not
    /// while the run waits for a player to want its next chunk).
    place: Option<Place>,
}

/// A `--max-downloads` place, counted in `spool_downloads_transferring`
/// while held.
struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Place {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, runs: &Runs) -> Place {
        let gauge = runs.upstream().metrics().downloads_transferring.clone();
        gauge.inc();
        Place {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Run {
    async fn go(mut self, first: Option<(reqwest::Response, Head)>) {
        if let Some((resp, head)) = first {
            let body = std::mem::replace(&mut self.body, self.runs.body(&self.media, 0, 0));
            self.body = body.with_response(resp, &head);
        }
        let failure = match self.fetch_all().await {
            Ok(()) => CacheError::Cancelled,
            Err(f) => f,
        };
        self.release(&failure);
        if failure.is_changed() {
            self.runs.invalidate(&self.media).await;
        }
    }

    /// Fails and frees the chunks this run claimed and did not fill.
    fn release(&mut self, failure: &CacheError) {
        let next = self.feed.next.lock().unwrap().take();
        let current = self.current.take().map(|(i, _, c)| (i, c));
        for (index, chunk) in current.into_iter().chain(next) {
            chunk.fail(failure.clone());
            self.media.release(index, &chunk);
        }
        if let Some(f) = self.following.take() {
            f.abort();
        }
    }

    async fn fetch_all(&mut self) -> Result<(), CacheError> {
        let grace = self.runs.inner.policy.grace;
        let mut writing = VecDeque::new();
        while let Some((index, part, chunk)) = self.current.clone() {
            self.place = None;
            let w = self.runs.window(&self.media);
            // A part that ends its run (a chunk's head, a part before a cut)
            // completes a chunk whose other bytes are on the way: it is
            // fetched whether or not a player still wants it.
            if self.continues && !wait_wanted(&self.media, index, &w, grace).await {
                debug!(index, "read-ahead no longer wanted; stopping");
                return Ok(());
            }
            // Claim the next chunk before filling this one: a player reads
            // on as soon as this chunk's last byte arrives, and must find the
            // next one downloading, not missing. It is fetched once a player
            // wants it (the wait at the loop's top), on this same connection
            // or the next request; nobody wanting it within the grace period
            // ends the run.
            let next = index + 1;
            let whole = chunk.limit(part) == chunk.len();
            if self.continues
                && whole
                && next < self.media.chunk_count()
                && next <= self.media.read_limit()
            {
                let mut claimed = self.feed.next.lock().unwrap();
                if claimed.is_none() {
                    *claimed = self.media.claim(next, next, 0, &self.feed, None).pop();
                    if claimed.is_none() {
                        debug!(next, "next chunk already taken; run ends after this one");
                    }
                }
            }
            if !self.take_place(index).await {
                debug!(
                    index,
                    "nobody wants it any more; stopping before a download place came"
                );
                return Ok(());
            }
            self.ensure_body(index, part, &chunk).await;
            let started = Instant::now();
            let got = self.fill(index, part, &chunk).await?;
            chunk.finish(part, Ok(()));
            self.media.record_rate(got, started.elapsed());
            self.current = None;
            // A part that ends before its chunk does (a head, or a part cut
            // for a player ahead of it) ends the run; the run filling the
            // chunk's last part writes it.
            if chunk.limit(part) < chunk.len() {
                return Ok(());
            }
            if self.continues {
                self.current = self
                    .feed
                    .next
                    .lock()
                    .unwrap()
                    .take()
                    .map(|(i, c)| (i, 0, c));
            }
            // A few chunk writes in flight per run absorb the disk's hiccups;
            // past that the run waits, so memory stays bounded when the disk
            // is slower than the origin.
            let complete = chunk.is_complete();
            let writer = self.runs.writer();
            let Some(write) = writer.spawn(self.media.clone(), index, chunk) else {
                continue;
            };
            if !complete {
                // Another part may still be on the way: do not let it hold
                // up the run.
                continue;
            }
            if writing.len() >= WRITES_IN_FLIGHT {
                if let Some(w) = writing.pop_front() {
                    let _: Result<(), _> = w.await;
                }
            }
            writing.push_back(write);
        }
        Ok(())
    }

    /// Makes sure the body delivers the part of chunk `index` from `part`
    /// on: when the last request ended before it, the next one (sent early
    /// when a player's window reached it, or now) takes over, asking for
    /// as much as the players want now.
    async fn ensure_body(&mut self, index: u64, part: u64, chunk: &InFlight) {
        let from = self.media.chunk_start(index) + chunk.limit(part) - chunk.missing(part);
        // Bytes already received past the last chunk are the next ones.
        let pos = self.body.pos() - self.carry.as_ref().map_or(0, |c| c.len() as u64);
        if pos <= self.body.end() && pos == from {
            return;
        }
        self.carry = None;
        if let Some(f) = self.following.take() {
            if let Ok(body) = f.await {
                if body.pos() == from {
                    self.feed.set_end(body.end());
                    self.body = body;
                    return;
                }
            }
        }
        let end = match self.continues {
            true => {
                let own = self.feed.next.lock().unwrap().as_ref().map(|n| n.0);
                self.runs.stretch_end(&self.media, index, self.grow(), own)
            }
            false => self.media.chunk_start(index) + chunk.limit(part) - 1,
        };
        self.feed.jump(from);
        self.feed.set_end(end);
        self.body = self.runs.body(&self.media, from, end);
    }

    /// How many chunks past its first the next request of this run asks
    /// for at least: twice what the last one did.
    fn grow(&self) -> u64 {
        let cs = self.media.chunk_size();
        let last = self.body.end().saturating_sub(self.body.first()) / cs + 1;
        last.saturating_mul(2).saturating_sub(1)
    }

    /// Sends the request for the stretch after this one early: once a
    /// player's window reaches past what the current request asks for, or
    /// when a player reads on and the next request's first bytes would
    /// come later than this one's last (a distant origin).
    fn follow_early(&mut self, index: u64) {
        if !self.continues || self.following.is_some() {
            return;
        }
        let media = &self.media;
        let next_start = self.body.end() + 1;
        if next_start >= media.size() || next_start != media.chunk_start(index + 1) {
            return;
        }
        let w = self.runs.window(media);
        if !media.wanted(index + 1, &w, Duration::ZERO) && !self.next_due(index, next_start) {
            return;
        }
        let own = self.feed.next.lock().unwrap().as_ref().map(|n| n.0);
        let end = self.runs.stretch_end(media, index + 1, self.grow(), own);
        if end < next_start {
            return;
        }
        let mut body = self.runs.body(media, next_start, end);
        self.following = Some(tokio::spawn(async move {
            // An error here is met again (and handled) when it is read.
            let _ = body.open().await;
            body
        }));
    }

    /// Whether a player reads on at chunk `index` and what this request
    /// still brings (from `next_start`) arrives within about one time to
    /// first byte of the origin: a request sent later leaves the player
    /// waiting at the chunk's end. Rate and time to first byte are the
    /// ones measured, as for `Runs::hurry`.
    fn next_due(&self, index: u64, next_start: u64) -> bool {
        if !self.media.reading_on(index) {
            return false;
        }
        let pace = self.media.pace();
        self.feed.eta(next_start, pace) <= pace.lead()
    }

    /// Waits for a `--max-downloads` place (its players wait with it);
    /// false when nobody wanted chunk `index` any more meanwhile (its
    /// players hung up while queued: the run gives its claim back instead
    /// of taking a place for nobody).
    async fn take_place(&mut self, index: u64) -> bool {
        if self.place.is_some() {
            return true;
        }
        let downloads = self.runs.inner.downloads.clone();
        let permit = match downloads.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.runs.upstream().metrics().limited("max_downloads");
                let w = self.runs.window(&self.media);
                let grace = self.runs.inner.policy.grace;
                tokio::select! {
                    p = downloads.acquire_owned() => p.ok(),
                    () = abandoned(&self.media, index, &w, grace) => return false,
                }
            }
        };
        self.place = permit.map(|p| Place::new(p, &self.runs));
        true
    }

    /// Fills this run's part of one chunk from the body; returns the bytes
    /// it took.
    async fn fill(
        &mut self,
        index: u64,
        part: u64,
        chunk: &Arc<InFlight>,
    ) -> Result<u64, CacheError> {
        // A chunk nobody wants any more is still finished (its bytes are
        // on the way) unless that takes longer than FINISH_BUDGET: an
        // origin that drips bytes must not hold a download place forever.
        let (w, grace) = (self.runs.window(&self.media), self.runs.inner.policy.grace);
        let media = self.media.clone();
        let abandoned = abandoned(&media, index, &w, grace);
        tokio::pin!(abandoned);
        self.feed.requested();
        let mut got = 0;
        while chunk.missing(part) > 0 {
            if let Some(e) = chunk.failure() {
                // Another part failed; the chunk cannot complete.
                return Err(e);
            }
            let piece = match self.carry.take() {
                Some(p) => p,
                None => {
                    let next = tokio::select! {
                        next = self.body.next() => {
                            self.feed.set_troubled(self.body.is_troubled());
                            next?
                        }
                        _ = &mut abandoned => {
                            debug!(index, "chunk abandoned and not finishing; stopping");
                            return Err(CacheError::Cancelled);
                        }
                    };
                    let piece = next.ok_or_else(|| {
                        UpstreamError::Protocol("the stretch ended before its last chunk".into())
                    })?;
                    if let Some(ttfb) = self.feed.advanced(piece.len() as u64) {
                        media.record_ttfb(ttfb);
                    }
                    self.follow_early(index);
                    piece
                }
            };
            // A player may be waiting for this piece's first bytes: a big
            // piece goes in twice, and the player takes its first bytes
            // before the rest is copied (into pages not touched yet).
            let mut piece = piece;
            if piece.len() > FIRST_PUSH && piece.len() as u64 <= chunk.missing(part) {
                let later = piece.split_off(FIRST_PUSH);
                got += piece.len() as u64;
                chunk.push_at(part, piece);
                self.carry = Some(later);
                tokio::task::yield_now().await;
                continue;
            }
            got += piece.len() as u64;
            // What does not fit belongs to the next chunk, unless this part
            // was cut short (then another transfer brings those bytes).
            let rest = chunk.push_at(part, piece);
            if chunk.limit(part) == chunk.len() {
                self.carry = rest;
            }
        }
        Ok(got)
    }
}

/// How long a chunk nobody wants any more may take to finish.
const FINISH_BUDGET: Duration = Duration::from_secs(10);

/// Resolves once chunk `index` has been unwanted for `grace` and then
/// for FINISH_BUDGET more.
async fn abandoned(media: &Media, index: u64, w: &Window, grace: Duration) {
    loop {
        wait_unwanted(media, index, w, grace).await;
        tokio::time::sleep(FINISH_BUDGET).await;
        if !media.wanted(index, w, grace) || media.is_gone() {
            return;
        }
    }
}

/// A run's task that dies (a panic, an abort) still frees its chunks, so
/// players waiting on them fetch them again instead of waiting forever.
impl Drop for Run {
    fn drop(&mut self) {
        self.release(&CacheError::Cancelled);
        self.runs.upstream().metrics().active_downloads.dec();
    }
}

/// Waits until a player wants chunk `index`, for at most `grace` after no
/// live player is reading towards it any more (one at most two windows
/// behind it: its window reaches the chunk as it reads on, and ending the
/// run would drop the bytes its request already has on the way).
async fn wait_wanted(media: &Media, index: u64, w: &Window, grace: Duration) -> bool {
    let mut deadline = Instant::now() + grace;
    let watch = media.watchers.watch(index);
    loop {
        let moved = watch.notified();
        if media.wanted(index, w, grace) {
            return true;
        }
        let now = Instant::now();
        if media.approaching(index, w) {
            deadline = now + grace;
        }
        if now >= deadline || media.is_gone() {
            return false;
        }
        // Playheads signal when they move; the timeout also covers the
        // moment a finished player's grace runs out.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), moved).await;
    }
}

/// Resolves once no player has wanted chunk `index` for `grace` (players
/// that left count for `grace` after they left).
async fn wait_unwanted(media: &Media, index: u64, w: &Window, grace: Duration) {
    let watch = media.watchers.watch(index);
    loop {
        let moved = watch.notified();
        if !media.wanted(index, w, grace) || media.is_gone() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), moved).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::rig::{media, rig};
    use crate::upstream::allow::AllowList;
    use crate::upstream::Settings;

    /// An origin that accepts connections and never answers.
    async fn silent_origin() -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        (url, task)
    }

    /// An upstream client for loopback origins, with no retries and a long
    /// answer timeout (tests bound their own waits).
    fn loopback_upstream(rig: &crate::cache::rig::Rig) -> Upstream {
        Upstream::new(
            &Settings {
                allow: AllowList::parse("127.0.0.1").unwrap(),
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(3600),
                max_redirects: 0,
                retries: 0,
                max_skip: 0,
                rules: Default::default(),
            },
            rig.metrics.clone(),
        )
        .unwrap()
    }

    /// Read-ahead given as a time of media becomes chunks once the media's
    /// byte rate is known, bounded by the byte limit; before that, the
    /// default.
    #[tokio::test]
    async fn read_ahead_in_seconds_follows_the_byte_rate() {
        let rig = rig();
        let upstream = loopback_upstream(&rig);
        let ahead = Policy {
            max_bytes: 640,
            time: Some(Duration::from_secs(30)),
            grace: Duration::from_secs(3),
        };
        let runs = Runs::new(
            upstream,
            rig.writer.clone(),
            rig.index.clone(),
            rig.files.clone(),
            ahead,
            4,
        );
        let m = media(&rig).await; // 10-byte chunks
        let unknown = crate::cache::readahead::UNKNOWN_RATE_READ_AHEAD
            .div_ceil(10)
            .min(64);
        assert_eq!(runs.window(&m).chunks(), unknown);
        m.set_byte_rate(2); // 30 s of media: 60 bytes, 6 chunks
        assert_eq!(runs.window(&m).chunks(), 6);
        m.set_byte_rate(1000); // 30000 bytes: bounded by 64 chunks
        assert_eq!(runs.window(&m).chunks(), 64);
    }

    /// A run whose task dies (aborted here; a panic unwinds the same way)
    /// releases its chunks, and players waiting on them get an error
    /// instead of waiting forever.
    #[tokio::test]
    async fn a_run_that_dies_releases_its_chunks() {
        let rig = rig();
        let (url, _origin) = silent_origin().await;
        let upstream = loopback_upstream(&rig);
        let runs = Runs::new(
            upstream,
            rig.writer.clone(),
            rig.index.clone(),
            rig.files.clone(),
            Policy {
                max_bytes: 40,
                time: None,
                grace: Duration::from_secs(3600),
            },
            4,
        );
        let m = media(&rig).await;
        let m = Arc::new(Media::new(
            Arc::new(url::Url::parse(&url).unwrap()),
            m.row.clone(),
            Vec::new(),
        ));
        let _player = m.playhead(0, u64::MAX, Duration::from_secs(3600));
        let run = runs.claim(&m, 0, 0).unwrap();
        let Some(Slot::Pending(chunk)) = m.slot(0) else {
            panic!("chunk 0 is claimed");
        };
        let reader = tokio::spawn(async move { chunk.read_at(0).await });
        let task = tokio::spawn(run.go(None));
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        // A deadline only so that a hang fails the test instead of
        // blocking the suite.
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the waiting player was released")
            .unwrap();
        assert_eq!(got, Err(CacheError::Cancelled));
        assert!(m.slot(0).is_none(), "the slot is free for the next player");
    }
}
