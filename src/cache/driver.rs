//! The run driver: one download run from its first request to its end.
//! It fills its chunks part by part from the body, claims the next chunk
//! before filling this one, sends the request for the next stretch early,
//! waits (without a download place) while no player wants its next chunk,
//! and hands complete chunks to the Writer. `run.rs` starts runs; what
//! they fetch with and how far they ask is `fetch.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::error::CacheError;
use super::fetch::Fetcher;
use super::inflight::{InFlight, Transfer};
use super::media::Media;
use super::readahead::Window;
use crate::upstream::{Answer, Head, ResumingBody, UpstreamError};

/// Bytes a run fills before its rate is a sample of the origin's.
const RATE_SAMPLE: u64 = 256 * 1024;

/// Complete chunks of one run waiting for the disk at most.
const WRITES_IN_FLIGHT: usize = 3;

/// Bytes of a big arriving piece put into its chunk first, before the run
/// lets waiting players take them (body.rs sends a downloading chunk in
/// pieces of this size too).
const FIRST_PUSH: usize = 64 * 1024;

pub(super) struct Run {
    fetch: Arc<Fetcher>,
    media: Arc<Media>,
    /// Where this transfer is, for players deciding whether to wait for it;
    /// it also holds the chunk claimed next.
    pub(super) feed: Arc<Transfer>,
    /// The chunk being filled, and the start of the part of it this run
    /// fills.
    current: Option<(u64, u64, Arc<InFlight>)>,
    /// Whether the run goes on past the part it fills (false for a chunk's
    /// head and for parts that end before their chunk does).
    pub(super) continues: bool,
    /// The stretch this run requests.
    pub(super) body: ResumingBody,
    /// The request for the stretch after `body`, sent early.
    following: Option<JoinHandle<ResumingBody>>,
    /// Bytes received past the chunk being filled.
    carry: Option<Bytes>,
    /// A `--max-downloads` place, held while bytes are transferred (not
    /// while the run waits for a player to want its next chunk).
    place: Option<Place>,
}

/// A `--max-downloads` place and one of its origin's, counted in `spool_downloads_transferring`
/// while held.
struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _origin: Option<tokio::sync::OwnedSemaphorePermit>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Place {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        origin: Option<tokio::sync::OwnedSemaphorePermit>,
        fetch: &Fetcher,
    ) -> Place {
        let gauge = fetch.upstream.metrics().downloads_transferring.clone();
        gauge.inc();
        Place {
            _permit: permit,
            _origin: origin,
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
    /// A run that fills `part` of chunk `index` (its `current`) with the
    /// bytes `feed` stands for, from where the feed is to its end.
    pub fn new(
        fetch: Arc<Fetcher>,
        media: &Arc<Media>,
        feed: Arc<Transfer>,
        current: (u64, u64, Arc<InFlight>),
        continues: bool,
    ) -> Run {
        media.streams.run_started();
        let m = fetch.upstream.metrics();
        m.active_downloads.inc();
        m.downloads_by_host.get_or_create(&m.host(&media.url)).inc();
        Run {
            body: fetch.body(media, feed.at(), feed.end()),
            fetch,
            media: media.clone(),
            feed,
            current: Some(current),
            continues,
            carry: None,
            place: None,
            following: None,
        }
    }

    pub async fn go(mut self, first: Option<(Answer, Head)>) {
        if let Some((resp, head)) = first {
            let body = std::mem::replace(&mut self.body, self.fetch.body(&self.media, 0, 0));
            self.body = body.with_response(resp, &head);
        }
        let failure = match self.fetch_all().await {
            Ok(()) => CacheError::Cancelled,
            Err(f) => f,
        };
        self.release(&failure);
        if failure.is_changed() {
            self.fetch.invalidate(&self.media).await;
        }
    }

    /// Fails and frees the chunks this run claimed and did not fill.
    fn release(&mut self, failure: &CacheError) {
        self.feed.set_placed(false);
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
        let grace = self.fetch.policy.grace;
        let mut writing = VecDeque::new();
        // Bytes and time of the chunks filled since the media's rate was
        // last recorded: small chunks make one sample together.
        let mut sample = (0, Duration::ZERO);
        while let Some((index, part, chunk)) = self.current.clone() {
            self.place = None;
            self.feed.set_placed(false);
            let w = self.fetch.window(&self.media);
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
                        *claimed = self.leapfrog(index);
                    }
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
            sample = (sample.0 + got, sample.1 + started.elapsed());
            if sample.0 >= RATE_SAMPLE {
                self.media.record_rate(sample.0, sample.1);
                sample = (0, Duration::ZERO);
            }
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
            let writer = &self.fetch.writer;
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

    /// When the chunks ahead come over several streams and the next chunk
    /// is another stream's: the first chunk past every stretch the streams
    /// asked for, within the windows of the players that want chunk
    /// `index`, claimed for this run to go on with (so each stream goes on
    /// as soon as its stretch ends, its request sent early). None when
    /// fewer streams are wanted now.
    fn leapfrog(&self, index: u64) -> Option<(u64, Arc<InFlight>)> {
        let media = &self.media;
        let want = self.fetch.streams(media);
        if want <= 1 || media.streams.runs() > want {
            return None;
        }
        let reach = media.wanting(index, &self.fetch.window(media))?.reach;
        let at = media.next_stream_start(index + 1, reach.min(media.read_limit()))?;
        debug!(index, at, want, "a stream goes on past the others");
        media.claim(at, at, 0, &self.feed, None).pop()
    }

    /// Makes sure the body delivers the part of chunk `index` from `part`
    /// on: when the last request ended before it, the next one (sent early
    /// when a player's window reached it, or now) takes over, asking for
    /// as much as the players want now.
    async fn ensure_body(&mut self, index: u64, part: u64, chunk: &InFlight) {
        let from = self.media.chunk_start(index) + chunk.reached(part);
        // Bytes already received past the last chunk are the next ones.
        let pos = self.body.pos() - self.carry.as_ref().map_or(0, |c| c.len() as u64);
        if pos <= self.body.end() && pos == from {
            return;
        }
        self.carry = None;
        if let Some(f) = self.following.take() {
            if let Ok(body) = f.await {
                if body.pos() == from {
                    self.feed.jump(from);
                    self.feed.set_end(body.end());
                    self.body = body;
                    return;
                }
            }
        }
        let end = match self.continues {
            true => {
                let own = self.feed.next.lock().unwrap().as_ref().map(|n| n.0);
                self.fetch.stretch_end(&self.media, index, self.grow(), own)
            }
            false => self.media.chunk_start(index) + chunk.limit(part) - 1,
        };
        self.feed.jump(from);
        self.feed.set_end(end);
        self.body = self.fetch.body(&self.media, from, end);
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
        // Only while this request brings its last chunk.
        let ends = self.body.end() + 1;
        if ends >= media.size() || ends != media.chunk_start(index + 1) {
            return;
        }
        // The stretch after it starts right after it, or, for a run that
        // goes on past other streams' stretches, at the chunk it claimed.
        let own = self.feed.next.lock().unwrap().as_ref().map(|n| n.0);
        let next = own.filter(|&j| j > index + 1).unwrap_or(index + 1);
        let next_start = media.chunk_start(next);
        let w = self.fetch.window(media);
        if !media.wanted(next, &w, Duration::ZERO) && !self.next_due(index, ends) {
            return;
        }
        // The next chunk must be this run's to fill: one that another
        // transfer fills (the index fetched first, a player's seek) is not
        // asked for a second time.
        if own != Some(next) && media.slot(next).is_some() {
            return;
        }
        // Not while the origin asked for a pause: the next request waits
        // for it with the run's next place.
        if self.fetch.upstream.origins().paused(&media.url) {
            return;
        }
        let end = self.fetch.stretch_end(media, next, self.grow(), own);
        if end < next_start {
            return;
        }
        self.feed.ask(end);
        let mut body = self.fetch.body(media, next_start, end);
        self.following = Some(tokio::spawn(async move {
            // An error here is met again (and handled) when it is read.
            let _ = body.open().await;
            body
        }));
    }

    /// Whether a player reads on at chunk `index` and what this request
    /// still brings (up to `next_start`) arrives within about one time to
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
    ///
    /// The place is one of its origin's (`--max-connections-per-origin`,
    /// taken first: runs waiting for a busy origin do not hold places
    /// other origins' runs could use), then a `--max-downloads` one. A
    /// chunk a player is at now does not wait for its origin's place (it
    /// takes one when one is free): the cap holds back read-ahead and
    /// extra streams, never a player's next byte (a seek while earlier
    /// seeks' chunks finish).
    async fn take_place(&mut self, index: u64) -> bool {
        if self.place.is_some() {
            return true;
        }
        let get = self.fetch.places(&self.media, index);
        let w = self.fetch.window(&self.media);
        let grace = self.fetch.policy.grace;
        let permits = tokio::select! {
            p = get => p,
            () = abandoned(&self.media, index, &w, grace) => return false,
        };
        self.place = permits.map(|(p, origin)| Place::new(p, origin, &self.fetch));
        self.feed.set_placed(self.place.is_some());
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
        let (w, grace) = (self.fetch.window(&self.media), self.fetch.policy.grace);
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
        self.media.streams.run_ended();
        let m = self.fetch.upstream.metrics();
        m.active_downloads.dec();
        m.downloads_by_host
            .get_or_create(&m.host(&self.media.url))
            .dec();
    }
}

/// Waits until a player wants chunk `index`, for at most `grace` after no
/// live player is reading towards it any more (one at most two windows
/// behind it: its window reaches the chunk as it reads on, and ending the
/// run would drop the bytes its request already has on the way).
async fn wait_wanted(media: &Media, index: u64, w: &Window, grace: Duration) -> bool {
    let mut deadline = Instant::now() + grace;
    let watch = media.watchers().watch(index);
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
    let watch = media.watchers().watch(index);
    loop {
        let moved = watch.notified();
        if !media.wanted(index, w, grace) || media.is_gone() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), moved).await;
    }
}
