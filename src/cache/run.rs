//! Downloads from the origin.
//!
//! A *run* is one upstream request for a stretch of missing chunks. It
//! claims each chunk just before it fetches it (so no other run or player
//! fetches it again), cuts the arriving bytes into chunks as they come,
//! hands every complete chunk to the store, and goes on while players read
//! within `--read-ahead` behind the chunk it would fetch next. It stops when
//! no player has wanted that chunk for the read-ahead grace period, so an
//! abandoned stream stops downloading.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::CacheError;
use super::inflight::InFlight;
use super::media::{Media, Slot};
use super::persist::Writer;
use crate::store::{ChunkFiles, Index};
use crate::upstream::{redact, Head, ResumingBody, Upstream, UpstreamError};

/// A miss this far into a chunk starts the download at the player's byte
/// (and fetches the chunk's head separately) instead of at the chunk's
/// start: on a slow origin, waiting for megabytes before the wanted byte
/// would make every seek slow.
pub const SPLIT_MIN: u64 = 64 * 1024;

/// Complete chunks of one run waiting for the disk at most.
const WRITES_IN_FLIGHT: usize = 3;

/// Where a run for a miss at `pos` starts within chunk `index`.
pub fn split_for(media: &Media, index: u64, pos: u64) -> u64 {
    split_at(pos.saturating_sub(media.chunk_start(index)))
}

/// The split for a miss `within` bytes into its chunk.
pub fn split_at(within: u64) -> u64 {
    if within >= SPLIT_MIN {
        within
    } else {
        0
    }
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
    /// The read-ahead window in whole chunks.
    read_ahead_chunks: u64,
    grace: Duration,
}

impl Runs {
    pub fn new(
        upstream: Upstream,
        writer: Writer,
        index: Index,
        files: ChunkFiles,
        read_ahead_chunks: u64,
        grace: Duration,
        max_downloads: usize,
    ) -> Runs {
        Runs {
            inner: Arc::new(Inner {
                downloads: Arc::new(tokio::sync::Semaphore::new(max_downloads.max(1))),
                upstream,
                writer,
                index,
                files,
                read_ahead_chunks,
                grace,
            }),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    pub fn writer(&self) -> &Writer {
        &self.inner.writer
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
        tokio::spawn(run.go(None));
        true
    }

    /// Starts a run whose first response (from the cold probe) is in hand.
    pub fn start_with(
        &self,
        media: &Arc<Media>,
        index: u64,
        split: u64,
        requested_end: Option<u64>,
        resp: reqwest::Response,
        head: Head,
    ) {
        if let Some(mut run) = self.claim(media, index, split) {
            // The probe may have asked for less than the missing stretch.
            if let Some(end) = requested_end {
                run.body.limit(end);
            }
            tokio::spawn(run.go(Some((resp, head))));
        }
    }

    /// Called as a player reads chunk `at`: starts fetching the first
    /// missing chunk within the read-ahead window, unless the run
    /// downloading the chunk before it will go on to it anyway (one request
    /// per stretch, not one per chunk).
    /// Nothing past `limit`, the last chunk this player may want (a closed
    /// range's end), is fetched.
    pub fn read_ahead(&self, media: &Arc<Media>, at: u64, limit: u64) {
        let last = at
            .saturating_add(self.inner.read_ahead_chunks)
            .min(limit)
            .min(media.chunk_count().saturating_sub(1));
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

    fn claim(&self, media: &Arc<Media>, index: u64, split: u64) -> Option<Run> {
        let (index, chunk) = media.claim(index, index, split).pop()?;
        // Ask for everything up to the next chunk somebody already has: one
        // request for the whole missing stretch.
        let stretch_end = match media.next_taken(index + 1) {
            Some(taken) => media.chunk_start(taken) - 1,
            None => media.size() - 1,
        };
        // Players reading closed ranges only want up to their ends.
        let limit = media.read_limit().max(index);
        let end_byte = match limit.checked_add(1) {
            Some(after) if after < media.chunk_count() => {
                stretch_end.min(media.chunk_start(after) - 1)
            }
            _ => stretch_end,
        };
        if split > 0 {
            tokio::spawn(self.clone().fetch_head(media.clone(), index, chunk.clone()));
        }
        let start = media.chunk_start(index) + split;
        Some(Run {
            runs: self.clone(),
            media: media.clone(),
            body: self.body(media, start, end_byte),
            current: Some((index, chunk)),
            next: None,
            carry: None,
            place: None,
        })
    }

    /// The bytes `[pos, end]` of a media from the origin, resumed on breaks.
    pub fn body(&self, media: &Media, pos: u64, end: u64) -> ResumingBody {
        ResumingBody::new(&self.inner.upstream, &media.url, &media.version, pos, end)
    }

    /// Fetches the head of a chunk whose tail a run fetches (a seek into
    /// the middle of a missing chunk), resuming like a run does.
    async fn fetch_head(self, media: Arc<Media>, index: u64, chunk: Arc<InFlight>) {
        let _guard = HeadGuard(chunk.clone());
        // The player is waiting for the tail: let its first bytes arrive
        // before the head competes with it for the origin and the CPU.
        let _ = chunk.read_at(chunk.split()).await;
        let start = media.chunk_start(index);
        let from = start + chunk.split() - chunk.head_missing();
        let mut body = self.body(&media, from, start + chunk.split() - 1);
        let result = loop {
            if chunk.is_failed() {
                return;
            }
            match body.next().await {
                Ok(Some(piece)) => chunk.push_head(piece),
                Ok(None) => break Ok(()),
                Err(e) => break Err(CacheError::from(e)),
            }
        };
        if result.as_ref().is_err_and(CacheError::is_changed) {
            self.invalidate(&media).await;
        } else {
            chunk.finish_head(result);
        }
    }
}

struct Run {
    runs: Runs,
    media: Arc<Media>,
    /// The chunk being filled and, once wanted, the next one.
    current: Option<(u64, Arc<InFlight>)>,
    next: Option<(u64, Arc<InFlight>)>,
    /// The stretch this run requests.
    body: ResumingBody,
    /// Bytes received past the chunk being filled.
    carry: Option<Bytes>,
    /// A `--max-downloads` place, held while bytes are transferred (not
    /// while the run waits for a player to want its next chunk).
    place: Option<tokio::sync::OwnedSemaphorePermit>,
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
        for (index, chunk) in self.current.take().into_iter().chain(self.next.take()) {
            chunk.fail(failure.clone());
            self.media.release(index, &chunk);
        }
    }

    async fn fetch_all(&mut self) -> Result<(), CacheError> {
        let ra = self.runs.inner.read_ahead_chunks;
        let grace = self.runs.inner.grace;
        let last_requested = self.body.end() / self.media.chunk_size();
        let mut writing = VecDeque::new();
        while let Some((index, chunk)) = self.current.clone() {
            self.place = None;
            if !wait_wanted(&self.media, index, ra, grace).await {
                debug!(index, "read-ahead no longer wanted; stopping");
                return Ok(());
            }
            // Claim the next chunk before filling this one: a player reads
            // on as soon as this chunk's last byte arrives, and must find the
            // next one downloading, not missing. It is fetched once a player
            // wants it (the wait at the loop's top), on this same connection;
            // nobody wanting it within the grace period ends the run.
            let next = index + 1;
            if next <= last_requested {
                self.next = self.media.claim(next, next, 0).pop();
                if self.next.is_none() {
                    debug!(next, "next chunk already taken; run ends after this one");
                }
            }
            self.take_place().await;
            self.fill(&chunk).await?;
            chunk.finish_tail();
            self.current = self.next.take();
            // A few chunk writes in flight per run absorb the disk's hiccups;
            // past that the run waits, so memory stays bounded when the disk
            // is slower than the origin.
            let writer = self.runs.writer();
            let Some(write) = writer.spawn(self.media.clone(), index, chunk.clone()) else {
                continue;
            };
            if chunk.split() > 0 {
                // Its head may still be on the way: do not let it hold up
                // the run (one such chunk per run at most).
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

    /// Waits for a `--max-downloads` place (its players wait with it).
    async fn take_place(&mut self) {
        if self.place.is_some() {
            return;
        }
        let downloads = self.runs.inner.downloads.clone();
        self.place = match downloads.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.runs.upstream().metrics().limited("max_downloads");
                downloads.acquire_owned().await.ok()
            }
        };
    }

    /// Fills the tail of one chunk from the body.
    async fn fill(&mut self, chunk: &Arc<InFlight>) -> Result<(), CacheError> {
        // A chunk nobody wants any more is still finished (its bytes are
        // on the way) unless that takes longer than FINISH_BUDGET: an
        // origin that drips bytes must not hold a download place forever.
        let (ra, grace) = (self.runs.inner.read_ahead_chunks, self.runs.inner.grace);
        let index = self.current.as_ref().map_or(0, |c| c.0);
        let media = self.media.clone();
        let abandoned = abandoned(&media, index, ra, grace);
        tokio::pin!(abandoned);
        while chunk.tail_missing() > 0 {
            if let Some(e) = chunk.failure() {
                // Its head download failed; the chunk cannot complete.
                return Err(e);
            }
            let mut piece = match self.carry.take() {
                Some(p) => p,
                None => {
                    let next = tokio::select! {
                        next = self.body.next() => next?,
                        _ = &mut abandoned => {
                            debug!(index, "chunk abandoned and not finishing; stopping");
                            return Err(CacheError::Cancelled);
                        }
                    };
                    next.ok_or_else(|| {
                        UpstreamError::Protocol("the stretch ended before its last chunk".into())
                    })?
                }
            };
            let need = chunk.tail_missing() as usize;
            if piece.len() > need {
                self.carry = Some(piece.split_off(need));
            }
            chunk.push(piece);
        }
        Ok(())
    }
}

/// How long a chunk nobody wants any more may take to finish.
const FINISH_BUDGET: Duration = Duration::from_secs(10);

/// Resolves once chunk `index` has been unwanted for `grace` and then
/// for FINISH_BUDGET more.
async fn abandoned(media: &Media, index: u64, ra: u64, grace: Duration) {
    loop {
        wait_unwanted(media, index, ra, grace).await;
        tokio::time::sleep(FINISH_BUDGET).await;
        if !media.wanted(index, ra, grace) || media.is_gone() {
            return;
        }
    }
}

/// A run's task that dies (a panic, an abort) still frees its chunks, so
/// players waiting on them fetch them again instead of waiting forever.
impl Drop for Run {
    fn drop(&mut self) {
        self.release(&CacheError::Cancelled);
    }
}

/// Fails a chunk's head part unless the head fetch finished it: a head
/// fetch that dies must not leave its chunk incomplete forever.
struct HeadGuard(Arc<InFlight>);

impl Drop for HeadGuard {
    fn drop(&mut self) {
        if !self.0.head_ended() {
            self.0.finish_head(Err(CacheError::Cancelled));
        }
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

/// Resolves once no player has wanted chunk `index` for `grace` (players
/// that left count for `grace` after they left).
async fn wait_unwanted(media: &Media, index: u64, ra: u64, grace: Duration) {
    loop {
        let moved = media.moved.notified();
        if !media.wanted(index, ra, grace) || media.is_gone() {
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

    /// A run whose task dies (aborted here; a panic unwinds the same way)
    /// releases its chunks, and players waiting on them get an error
    /// instead of waiting forever.
    #[tokio::test]
    async fn a_run_that_dies_releases_its_chunks() {
        let rig = rig();
        let (url, _origin) = silent_origin().await;
        let upstream = Upstream::new(
            &Settings {
                allow: AllowList::parse("127.0.0.1").unwrap(),
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(3600),
                max_redirects: 0,
                retries: 0,
                max_skip: 0,
                headers: Vec::new(),
            },
            rig.metrics.clone(),
        )
        .unwrap();
        let runs = Runs::new(
            upstream,
            rig.writer.clone(),
            rig.index.clone(),
            rig.files.clone(),
            4,
            Duration::from_secs(3600),
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
