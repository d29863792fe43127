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

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::driver::Run;
use super::fetch::Fetcher;
use super::inflight::{InFlight, Transfer};
use super::media::{Media, Slot};
use super::persist::Writer;
use super::readahead::{Policy, Window};
use crate::store::{ChunkFiles, Index};
use crate::upstream::{Answer, Head, ResumingBody, Upstream};

/// The shortest wait for a byte worth a second request (hurry).
const HURRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);
/// Where a run for a miss at `pos` starts within chunk `index`: at the
/// player's byte. The bytes before it come from a second, small request
/// once the player has its first bytes.
pub fn split_for(media: &Media, index: u64, pos: u64) -> u64 {
    pos.saturating_sub(media.chunk_start(index))
}

/// Starts and runs downloads. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Runs {
    inner: Arc<Fetcher>,
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
            inner: Arc::new(Fetcher {
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
        self.inner.window(media)
    }

    /// The bytes `[pos, end]` of a media from the origin, resumed on breaks.
    pub fn body(&self, media: &Media, pos: u64, end: u64) -> ResumingBody {
        self.inner.body(media, pos, end)
    }

    /// A few bytes of a media straight from the origin (not cached).
    pub async fn fetch_small(&self, media: &Media, r: std::ops::Range<u64>) -> Option<Bytes> {
        self.inner.fetch_small(media, r).await
    }

    /// Drops a media version whose origin copy changed: downloads of it
    /// stop, its rows and chunk files go, and the next player probes anew.
    pub async fn invalidate(&self, media: &Arc<Media>) {
        self.inner.invalidate(media).await
    }

    /// Starts a run at chunk `index` (at byte `split` within it) if nobody
    /// fetches that chunk yet. Returns false when it was cached or
    /// downloading.
    pub fn start(&self, media: &Arc<Media>, index: u64, split: u64) -> bool {
        let Some(run) = self.claim(media, index, split) else {
            return false;
        };
        debug!(
            media = media.id().map(|m| m.0),
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
        (asked, resp, head): (Instant, Answer, Head),
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
    ///
    /// When one transfer brings less than the players take
    /// (`Fetcher::streams`), more runs fetch the window's later stretches
    /// at once, each past what the others asked for, up to the streams
    /// wanted; an extra one starts only when its origin has a free place.
    pub fn read_ahead(&self, media: &Arc<Media>, at: u64, window_end: u64) {
        let last = window_end.min(media.chunk_count().saturating_sub(1));
        let mut before = media.slot(at);
        for index in at + 1..=last {
            let slot = media.slot(index);
            if slot.is_none() {
                if !matches!(before, Some(Slot::Pending(_))) {
                    self.start(media, index, 0);
                    return;
                }
                break;
            }
            before = slot;
        }
        let want = self.inner.streams(media);
        while want > 1 && media.streams.runs() < want {
            let origins = self.inner.upstream.origins();
            // From the player's own chunk: its transfer's request may reach
            // far past it before the run has claimed the chunks after.
            let Some(index) = media.next_stream_start(at, last) else {
                return;
            };
            if !origins.has_room(&media.url) || !self.start(media, index, 0) {
                return;
            }
            debug!(
                media = media.id().map(|m| m.0),
                index, want, "another stream"
            );
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
        // byte; only a clearly later arrival is worth a second request, and
        // only a wait a player would notice: the old transfer's bytes in
        // flight past the cut are sent by the origin all the same (a fast
        // origin would send them twice for a few milliseconds saved).
        if eta <= pace.lead().max(HURRY_AFTER) {
            return;
        }
        let feed = Transfer::new(pos, start + behind.limit - 1);
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
            media = media.id().map(|m| m.0),
            index,
            pos,
            behind = old.at(),
            eta_ms = eta.as_millis() as u64,
            "a player waits ahead of a transfer: new request from its byte"
        );
        let run = self.run(media, feed, (index, off, chunk.clone()), continues);
        self.inner.tasks.spawn(run.go(None));
    }

    fn claim(&self, media: &Arc<Media>, index: u64, split: u64) -> Option<Run> {
        let start = media.chunk_start(index) + split;
        let feed = Transfer::new(start, u64::MAX);
        let head = (split > 0).then(|| Transfer::new(media.chunk_start(index), start - 1));
        let (index, chunk) = media
            .claim(index, index, split, &feed, head.clone())
            .pop()?;
        let end = self.inner.stretch_end(media, index, 0, None);
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
        feed: Arc<Transfer>,
        current: (u64, u64, Arc<InFlight>),
        continues: bool,
    ) -> Run {
        Run::new(self.inner.clone(), media, feed, current, continues)
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::error::CacheError;
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
                limits: Default::default(),
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
