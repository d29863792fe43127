//! One media version: what the origin told about it, which of its chunks
//! are cached or downloading, and where its players are reading.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::error::CacheError;
use super::inflight::{InFlight, Transfer};
use super::pace::Pace;
use super::playhead::{Playhead, Playheads};
use super::readahead::{Head, Policy, Window};
use super::streams::Streams;
use super::watch::Watchers;
use crate::store::MediaId;
use crate::store::{unix_now, ChunkRow, MediaRow};
use crate::upstream::{UpstreamRule, UrlSet, Version};

/// Where the bytes of one chunk are.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// A complete file in the store; `verified` once its checksum was
    /// checked (or it was written) by this process; `written` when this
    /// process wrote it (None: it was in the index when the media opened).
    Cached {
        row: ChunkRow,
        verified: bool,
        written: Option<tokio::time::Instant>,
    },
    /// Downloading, or downloaded and being written.
    Pending(Arc<InFlight>),
}

/// Tells media instances apart for as long as the process runs (ids are
/// not enough: a media the index could not record has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Instance(u64);

#[derive(Debug)]
pub(crate) struct Media {
    pub row: MediaRow,
    /// The media's URL, parsed once: its identity (the cache key: the URL
    /// without the query parameters the settings ignore).
    pub url: Arc<Url>,
    /// The URLs that reached it, the newest first: what the origin is
    /// asked with (the key itself when no parameter is ignored).
    pub urls: UrlSet,
    /// What every origin response for it must agree with.
    pub version: Arc<Version>,
    /// The rule its fetches' redirects obey (`upstream/rule.rs`): that of
    /// the request that opened it, widened by a later request whose rule
    /// allows more (a signed link after an unsigned one), never narrowed.
    upstream_rule: Mutex<UpstreamRule>,
    instance: Instance,
    /// Only chunks that are cached or downloading have a slot, in order:
    /// bookkeeping grows with the chunks touched, never with the size an
    /// origin claims.
    slots: Mutex<BTreeMap<u64, Slot>>,
    /// Where its players read (`playhead.rs`).
    playheads: Arc<Playheads>,
    /// Set when the origin's copy changed and this version was dropped.
    gone: AtomicBool,
    /// When the origin last confirmed the validators, on tokio's clock
    /// (None: longer ago than this clock reaches, or in the future).
    probed: Mutex<Option<Instant>>,
    /// When a player last opened this media.
    last_used: Mutex<Instant>,
    /// What this media's origin showed so far (time to first byte, rate).
    pace: Mutex<Pace>,
    /// Bytes per second of playback, when the container told (0: unknown).
    byte_rate: AtomicU64,
    /// Its transfers, for parallel range streams (`streams.rs`).
    pub streams: Streams,
}

impl Media {
    pub fn new(url: Arc<Url>, row: MediaRow, chunks: Vec<ChunkRow>) -> Media {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let slots = chunks
            .into_iter()
            .map(|row| {
                let slot = Slot::Cached {
                    row,
                    verified: false,
                    written: None,
                };
                (row.chunk_index, slot)
            })
            .collect();
        Media {
            playheads: Arc::new(Playheads::new(row.chunk_size_bytes)),
            urls: UrlSet::unanswered(url.clone()),
            url,
            version: Arc::new(Version {
                size: row.size_bytes,
                etag: row.etag.clone(),
                last_modified: row.last_modified.clone(),
            }),
            instance: Instance(INSTANCES.fetch_add(1, Ordering::Relaxed)),
            upstream_rule: Mutex::new(UpstreamRule::unsigned(true)),
            last_used: Mutex::new(Instant::now()),
            pace: Mutex::default(),
            byte_rate: AtomicU64::new(0),
            streams: Streams::default(),
            probed: Mutex::new(instant_of(row.probed_unix)),
            row,
            slots: Mutex::new(slots),
            gone: AtomicBool::new(false),
        }
    }

    /// The same media, fetched under `rule` (the narrowest rule until
    /// then: unsigned, listed hosts only).
    pub fn with_rule(self, rule: UpstreamRule) -> Media {
        *self.upstream_rule.lock().unwrap() = rule;
        self
    }

    /// The rule its fetches obey now.
    pub fn upstream_rule(&self) -> UpstreamRule {
        self.upstream_rule.lock().unwrap().clone()
    }

    /// Opened by a request whose rule allows everything the current one
    /// does and more: its fetches obey that rule from now on.
    pub fn widen(&self, rule: &UpstreamRule) {
        let mut r = self.upstream_rule.lock().unwrap();
        if *r != *rule && r.within(rule) {
            *r = rule.clone();
        }
    }

    /// The index's id; None when the index could not record this version
    /// (it streams, but nothing of it is written).
    pub fn id(&self) -> Option<MediaId> {
        self.row.media_id
    }

    pub fn instance(&self) -> Instance {
        self.instance
    }

    pub fn size(&self) -> u64 {
        self.row.size_bytes
    }

    pub fn chunk_size(&self) -> u64 {
        self.row.chunk_size_bytes
    }

    pub fn chunk_count(&self) -> u64 {
        self.size().div_ceil(self.chunk_size())
    }

    /// Offset of the first byte of a chunk.
    pub fn chunk_start(&self, index: u64) -> u64 {
        index * self.chunk_size()
    }

    /// Length of a chunk (the last one may be short).
    pub fn chunk_len(&self, index: u64) -> u64 {
        self.chunk_size()
            .min(self.size().saturating_sub(self.chunk_start(index)))
    }

    pub fn slot(&self, index: u64) -> Option<Slot> {
        self.slots.lock().unwrap().get(&index).cloned()
    }

    /// Whether a chunk's file is in the cache (its slot says Cached).
    pub fn is_cached(&self, index: u64) -> bool {
        matches!(
            self.slots.lock().unwrap().get(&index),
            Some(Slot::Cached { .. })
        )
    }

    /// Registers downloads for the chunks from `first` up to `last` that
    /// nobody has yet, stopping at the first chunk that is cached or
    /// downloading. Returns the new in-flight chunks, in order; empty when
    /// `first` itself is taken. This is the single-flight point.
    /// `feed` is the transfer that fills them; the first chunk's bytes
    /// before `split` are left to a separate transfer, `head`.
    pub fn claim(
        &self,
        first: u64,
        last: u64,
        split: u64,
        feed: &Arc<Transfer>,
        head: Option<Arc<Transfer>>,
    ) -> Vec<(u64, Arc<InFlight>)> {
        let last = last.min(self.chunk_count().saturating_sub(1));
        let mut slots = self.slots.lock().unwrap();
        let mut claimed = Vec::new();
        for index in first..=last {
            if slots.contains_key(&index) || self.is_gone() {
                break;
            }
            let (split, head) = match index == first {
                true => (split, head.clone()),
                false => (0, None),
            };
            let chunk = Arc::new(InFlight::claimed(
                self.chunk_len(index),
                split,
                feed.clone(),
                head,
            ));
            slots.insert(index, Slot::Pending(chunk.clone()));
            claimed.push((index, chunk));
        }
        claimed
    }

    /// The first chunk at or after `from` that is cached or downloading.
    pub fn next_taken(&self, from: u64) -> Option<u64> {
        let slots = self.slots.lock().unwrap();
        slots.range(from..).next().map(|(i, _)| *i)
    }

    /// Where another stream would start among chunks `at..=last`: the
    /// first chunk nobody has, past every byte that a transfer filling a
    /// chunk there asked for (its request, and the next one it sent
    /// early), so no stream takes a chunk another one's request brings.
    pub fn next_stream_start(&self, at: u64, last: u64) -> Option<u64> {
        let last = last.min(self.chunk_count().saturating_sub(1));
        if at > last {
            return None;
        }
        let slots = self.slots.lock().unwrap();
        let asked = slots
            .range(at..=last)
            .filter_map(|(_, s)| match s {
                Slot::Pending(chunk) => chunk.asked_end(),
                Slot::Cached { .. } => None,
            })
            .max();
        let from = match asked {
            Some(end) => end.saturating_add(1).div_ceil(self.chunk_size()).max(at),
            None => at,
        };
        (from..=last).find(|i| !slots.contains_key(i))
    }

    /// Replaces a pending chunk by its cached file, if it is still the same
    /// download.
    pub fn set_cached(&self, chunk: &Arc<InFlight>, row: ChunkRow) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(Slot::Pending(p)) = slots.get(&row.chunk_index) {
            if Arc::ptr_eq(p, chunk) {
                let slot = Slot::Cached {
                    row,
                    verified: true,
                    written: Some(tokio::time::Instant::now()),
                };
                slots.insert(row.chunk_index, slot);
            }
        }
    }

    /// Forgets a pending chunk, if it is still the same download.
    pub fn release(&self, index: u64, chunk: &Arc<InFlight>) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(Slot::Pending(p)) = slots.get(&index) {
            if Arc::ptr_eq(p, chunk) {
                slots.remove(&index);
            }
        }
    }

    /// Records that a cached chunk's checksum was found right.
    pub fn mark_verified(&self, index: u64) {
        if let Some(Slot::Cached { verified, .. }) = self.slots.lock().unwrap().get_mut(&index) {
            *verified = true;
        }
    }

    /// Takes a cached chunk out of service while its row and file go
    /// (eviction, a broken file, an admin's delete): its slot holds a
    /// placeholder download, so readers wait and nobody fetches the chunk
    /// into the same file name meanwhile, until the returned guard is
    /// dropped. None when the chunk is not cached (another reader got
    /// there first, or it downloads again).
    pub fn retire_cached(self: &Arc<Self>, index: u64) -> Option<Retired> {
        let mut slots = self.slots.lock().unwrap();
        match slots.get(&index) {
            Some(Slot::Cached { row, .. }) => {
                let placeholder = Arc::new(InFlight::new(row.size_bytes));
                slots.insert(index, Slot::Pending(placeholder.clone()));
                Some(Retired {
                    media: self.clone(),
                    index,
                    placeholder,
                })
            }
            _ => None,
        }
    }

    /// Marks this version as replaced (the origin's copy changed) and
    /// fails its downloads. Returns false when it already was.
    pub fn mark_gone(&self) -> bool {
        if self.gone.swap(true, Ordering::SeqCst) {
            return false;
        }
        let pending: Vec<Arc<InFlight>> = {
            let slots = self.slots.lock().unwrap();
            slots
                .values()
                .filter_map(|s| match s {
                    Slot::Pending(p) => Some(p.clone()),
                    Slot::Cached { .. } => None,
                })
                .collect()
        };
        for chunk in pending {
            chunk.fail(CacheError::Upstream(
                crate::upstream::UpstreamError::Changed,
            ));
        }
        self.playheads.watchers.wake_all();
        true
    }

    pub fn mark_used(&self) {
        *self.last_used.lock().unwrap() = Instant::now();
    }

    /// Whether nothing needs this media in memory: no player, no download,
    /// and no use for `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        if self.last_used.lock().unwrap().elapsed() < idle {
            return false;
        }
        if self.playheads.any_live() {
            return false;
        }
        !self
            .slots
            .lock()
            .unwrap()
            .values()
            .any(|s| matches!(s, Slot::Pending(_)))
    }

    /// Whether the validators are older than `max_age`.
    pub fn is_stale(&self, max_age: Duration) -> bool {
        self.probed
            .lock()
            .unwrap()
            .is_none_or(|t| t.elapsed() >= max_age)
    }

    /// The origin confirmed the validators just now.
    pub fn set_probed(&self) {
        *self.probed.lock().unwrap() = Some(Instant::now());
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Runs waiting for a chunk of this media to be wanted or not.
    pub fn watchers(&self) -> &Watchers {
        &self.playheads.watchers
    }

    /// Whether a request starting at chunk `index` goes on where the last
    /// finished one stopped (a player reading in consecutive ranges).
    pub fn continues(&self, index: u64) -> bool {
        self.playheads.continues(index)
    }

    /// Starts tracking a player reading this media from chunk `index`; it
    /// wants read-ahead up to chunk `limit` at most. Players that left more
    /// than `grace` ago are forgotten here.
    pub fn playhead(&self, index: u64, limit: u64, grace: Duration) -> Playhead {
        self.playheads.start(index, limit, grace)
    }

    /// The players reading this media, and those that left (for the
    /// grace), as the read-ahead policy sees them.
    pub fn heads(&self) -> Vec<Head> {
        self.playheads.heads()
    }

    /// This media's read-ahead window under `policy`: one for runs,
    /// eviction and the admin API.
    pub fn window(&self, policy: &Policy) -> Window {
        policy.window(self.chunk_size(), self.byte_rate())
    }

    /// Whether some player reads chunk `index` or has it in its window, or
    /// did so less than `grace` ago (`readahead.rs`).
    pub fn wanted(&self, index: u64, w: &Window, grace: Duration) -> bool {
        self.playheads.with_heads(|h| w.wanted(h, index, grace))
    }

    /// Whether a player reading now is at most two windows before chunk
    /// `index`.
    pub fn approaching(&self, index: u64, w: &Window) -> bool {
        self.playheads.with_heads(|h| w.approaching(h, index))
    }

    /// Whether a player reading now is at chunk `index` (it waits for it).
    pub fn read_at(&self, index: u64) -> bool {
        self.playheads.with_heads(|h| Window::reading_at(h, index))
    }

    /// Whether a player reading now at chunk `index` reads on past its
    /// first piece.
    pub fn reading_on(&self, index: u64) -> bool {
        self.playheads.with_heads(|h| Window::reading_on(h, index))
    }

    /// What the players reading now that want chunk `index` ask of it.
    pub fn wanting(&self, index: u64, w: &Window) -> Option<super::readahead::Wanting> {
        self.playheads.with_heads(|h| w.wanting(h, index))
    }

    /// Bytes per second of playback, when known.
    /// From the container, or else as a player reading at its own pace
    /// was seen to take it.
    pub fn byte_rate(&self) -> Option<u64> {
        [
            self.byte_rate.load(Ordering::Relaxed),
            self.playheads.observed_rate(),
        ]
        .into_iter()
        .find(|&r| r > 0)
    }

    pub fn set_byte_rate(&self, rate: u64) {
        self.byte_rate.store(rate, Ordering::Relaxed);
    }

    /// What this media's origin showed so far.
    pub fn pace(&self) -> Pace {
        *self.pace.lock().unwrap()
    }

    /// Records a transfer's time to first byte.
    pub fn record_ttfb(&self, t: Duration) {
        let mut p = self.pace.lock().unwrap();
        *p = p.with_ttfb(t);
    }

    /// Records a transfer's rate over a stretch it fetched (at least a
    /// few hundred KiB: the driver's sample).
    pub fn record_rate(&self, bytes: u64, took: Duration) {
        if !took.is_zero() {
            let mut p = self.pace.lock().unwrap();
            *p = p.with_rate(bytes as f64 / took.as_secs_f64());
        }
    }

    /// Whether eviction must leave chunk `index` alone: a player reading
    /// now has it in its window.
    pub fn keeps(&self, index: u64, w: &Window) -> bool {
        self.playheads.with_heads(|h| w.keeps(h, index))
    }

    /// The last chunk any live player may want (u64::MAX when one reads on
    /// to the end, or none is reading).
    pub fn read_limit(&self) -> u64 {
        self.playheads.read_limit()
    }

    /// Every chunk that has a slot (cached or downloading), in order: for
    /// the admin's chunk map and prefetch.
    pub fn slots(&self) -> Vec<(u64, Slot)> {
        let slots = self.slots.lock().unwrap();
        slots.iter().map(|(i, s)| (*i, s.clone())).collect()
    }

    /// The players reading now, for the admin's status.
    pub fn live_playheads(&self) -> Vec<Head> {
        self.heads()
            .into_iter()
            .filter(|h| h.left.is_none())
            .collect()
    }
}

/// A cached chunk taken out of service (`Media::retire_cached`): when
/// dropped, its placeholder fails (readers waiting on it fetch the chunk
/// anew) and the slot is free.
pub(crate) struct Retired {
    media: Arc<Media>,
    index: u64,
    placeholder: Arc<InFlight>,
}

impl Drop for Retired {
    fn drop(&mut self) {
        self.placeholder.fail(CacheError::Cancelled);
        self.media.release(self.index, &self.placeholder);
    }
}

/// A unix time (from the index) on tokio's clock; None when it lies in
/// the future or further back than the clock reaches.
fn instant_of(unix: i64) -> Option<Instant> {
    let age = u64::try_from(unix_now().checked_sub(unix)?).ok()?;
    Instant::now().checked_sub(Duration::from_secs(age))
}

#[cfg(test)]
mod tests {
    use super::super::readahead::{Wanting, FIRST_PIECE};
    use super::*;

    fn media(size: u64, chunk: u64) -> Arc<Media> {
        let row = MediaRow::for_test(1, "http://x/u", size, chunk);
        Arc::new(Media::new(
            Arc::new(Url::parse(&row.url).unwrap()),
            row,
            vec![ChunkRow::new(3, 10, 0)],
        ))
    }

    /// A player reading at its own pace teaches the media its byte rate; one
    /// that keeps waiting for spool (a slow origin) does not.
    #[tokio::test(start_paused = true)]
    async fn a_paced_player_shows_the_byte_rate() {
        let m = media(1 << 30, 1 << 20);
        let p = m.playhead(0, u64::MAX, Duration::ZERO);
        let mut pos = 0;
        let mut read_for = |p: &Playhead, secs: u64, waits: bool| {
            // 100 pieces a second of 5000 bytes: 500 kB/s.
            for _ in 0..secs * 100 {
                if waits {
                    p.waited(Duration::from_millis(5));
                }
                pos += 5000;
                p.advance(pos, 5000, false);
            }
        };
        for _ in 0..7 {
            read_for(&p, 1, true);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(m.byte_rate(), None, "it waited half the time");
        // The sample going on when the waits stopped still has some; the
        // next one is clean.
        for _ in 0..8 {
            read_for(&p, 1, false);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(m.byte_rate(), Some(500_000));
        // The container's rate, when known, comes first.
        m.set_byte_rate(42);
        assert_eq!(m.byte_rate(), Some(42));
    }

    #[test]
    fn geometry() {
        let m = media(35, 10);
        assert_eq!(m.chunk_count(), 4);
        assert_eq!(m.chunk_len(0), 10);
        assert_eq!(m.chunk_len(3), 5);
    }

    #[test]
    fn claim_stops_at_taken_chunks() {
        let m = media(100, 10);
        let f = Transfer::new(0, 0);
        let got: Vec<u64> = m.claim(1, 9, 0, &f, None).iter().map(|c| c.0).collect();
        assert_eq!(got, vec![1, 2]);
        assert!(m.claim(2, 9, 0, &f, None).is_empty(), "already downloading");
        assert_eq!(m.next_taken(4), None);
        assert_eq!(m.next_taken(0), Some(1));
        let got: Vec<u64> = m.claim(8, 100, 0, &f, None).iter().map(|c| c.0).collect();
        assert_eq!(got, vec![8, 9], "clipped to the last chunk");
    }

    /// Staleness and idleness run on tokio's clock: a paused clock tests
    /// them without waiting.
    #[tokio::test(start_paused = true)]
    async fn validators_go_stale_and_media_idle_with_time() {
        let hour = Duration::from_secs(3600);
        let m = media(100, 10);
        assert!(m.is_stale(hour), "probed at the unix epoch in the fixture");
        m.set_probed();
        assert!(!m.is_stale(hour));
        tokio::time::advance(hour - Duration::from_secs(1)).await;
        assert!(!m.is_stale(hour));
        assert!(m.is_idle(Duration::from_secs(600)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.is_stale(hour));
        m.mark_used();
        assert!(!m.is_idle(Duration::from_secs(600)));
    }

    /// Another stream starts past what every transfer among the chunks
    /// asked for, the one filling the first chunk included (a run that
    /// has claimed only its first chunk yet).
    #[test]
    fn another_stream_starts_past_every_request() {
        let m = media(1000, 10);
        let feed = Transfer::new(40, 99);
        let _c = m.claim(4, 4, 0, &feed, None);
        assert_eq!(
            m.next_stream_start(5, 20),
            Some(5),
            "blind to chunk 4's request"
        );
        assert_eq!(m.next_stream_start(4, 20), Some(10));
        feed.ask(149);
        assert_eq!(m.next_stream_start(4, 20), Some(15), "and to its early one");
        let _d = m.claim(15, 15, 0, &Transfer::new(150, 159), None);
        assert_eq!(m.next_stream_start(4, 20), Some(16));
        assert_eq!(m.next_stream_start(4, 15), None);
    }

    #[test]
    fn idle_media() {
        let m = media(100, 10);
        assert!(!m.is_idle(Duration::from_secs(60)), "just used");
        assert!(m.is_idle(Duration::ZERO));
        let p = m.playhead(0, u64::MAX, Duration::ZERO);
        assert!(!m.is_idle(Duration::ZERO), "a player reads it");
        drop(p);
        let claimed = m.claim(5, 5, 0, &Transfer::new(0, 0), None);
        assert!(!m.is_idle(Duration::ZERO), "a chunk downloads");
        drop(claimed);
    }

    #[test]
    fn playheads_and_grace() {
        let m = media(1000, 10);
        // Two chunks at most.
        let w = Policy {
            max_bytes: 20,
            time: None,
            grace: Duration::ZERO,
        }
        .window(10, None);
        let w = &w;
        assert!(!m.wanted(5, w, Duration::from_secs(1)));
        let p = m.playhead(4, u64::MAX, Duration::from_secs(60));
        assert!(m.wanted(4, w, Duration::ZERO));
        assert!(
            !m.wanted(5, w, Duration::ZERO),
            "no read-ahead before the first piece"
        );
        assert!(!m.wanted(3, w, Duration::ZERO));
        // Read past the first piece: the window is as long as what was read
        // beyond it (20 bytes from byte 45 reach chunk 6), at most 2 chunks.
        p.advance(45, FIRST_PIECE + 20, false);
        assert!(m.wanted(5, w, Duration::ZERO));
        assert!(m.wanted(6, w, Duration::ZERO));
        assert!(!m.wanted(7, w, Duration::ZERO));
        p.advance(55, 1000, false);
        assert!(!m.wanted(7, w, Duration::ZERO), "capped at the read-ahead");
        p.set(5);
        assert!(m.wanted(7, w, Duration::ZERO));
        let want = Wanting {
            reach: 7,
            read: FIRST_PIECE + 1020,
            limit: u64::MAX,
        };
        assert_eq!(m.wanting(5, w), Some(want));
        assert_eq!(m.wanting(7, w), Some(want));
        assert_eq!(m.wanting(8, w), None, "past its window");
        assert_eq!(m.wanting(4, w), None, "behind it");
        drop(p);
        assert!(m.wanted(7, w, Duration::from_secs(60)), "within grace");
        assert!(!m.wanted(7, w, Duration::ZERO), "after grace");
        assert!(
            m.wanted(7, w, Duration::from_secs(60)),
            "asking with a shorter grace forgets nobody"
        );
        assert!(m.continues(5) && m.continues(6) && !m.continues(7));
        assert_eq!(m.wanting(5, w), None);

        // A player reading on in a new request keeps its window.
        let p = m.playhead(6, u64::MAX, Duration::from_secs(60));
        p.advance(60, 0, false);
        assert!(m.wanted(8, w, Duration::ZERO));
        drop(p);

        // Players gone longer than the grace are forgotten.
        drop(m.playhead(0, 0, Duration::ZERO));
        drop(m.playhead(0, 0, Duration::ZERO));
        assert_eq!(m.playheads.len(), 1, "only the last one is left");

        // A closed range wants no read-ahead past its end.
        let p = m.playhead(4, 5, Duration::from_secs(60));
        p.advance(40, FIRST_PIECE + 1000, false);
        assert!(m.wanted(5, w, Duration::ZERO));
        assert!(!m.wanted(6, w, Duration::ZERO));
        assert_eq!(m.read_limit(), 5);
        drop(p);
    }
}
