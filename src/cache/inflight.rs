//! A chunk while it downloads: the bytes that have arrived so far, which any
//! number of readers follow as they grow. This is what lets the first bytes
//! of a miss reach the player as soon as the origin sends them, and what
//! makes all players of one chunk share one upstream transfer.
//!
//! A chunk downloads in one or more *parts*, each a stretch of the chunk
//! filled in order by one upstream transfer (a [`Transfer`]). A download starts
//! with one part, or two when a player seeks into the middle of a missing
//! chunk (the part from the player's byte comes first; the chunk's head is
//! fetched by a second, small request). When a player waits for a byte that
//! the part's transfer would reach later than a new request could, the part
//! is *cut* at that byte: its transfer stops there and a new transfer fills
//! the rest (see `Runs::hurry`). Each byte still comes from the origin once;
//! the chunk is complete when every part is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::CacheError;
use super::pace::Pace;

/// One upstream transfer filling parts of chunks: where it is, and how fast
/// it goes, so that a player waiting for a byte ahead of it can tell whether
/// a new request would bring that byte sooner.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// The media byte this transfer delivers next.
    at: AtomicU64,
    /// When its request went out (None: not yet) and its first byte came.
    times: Mutex<FeedTimes>,
    /// The chunk a run claimed to fill after the current one; handed to the
    /// transfer that takes the run's stretch over when its part is cut.
    pub next: Mutex<Option<(u64, Arc<InFlight>)>>,
    /// The last byte (inclusive) of the stretch this transfer is to fetch.
    end: AtomicU64,
    /// The last byte its run asked for in a request sent early, for the
    /// stretch after this one (0: none).
    asked: AtomicU64,
    /// Its transfer broke lately: a new request would fare no better (and
    /// requests must stay bounded against an origin that breaks them).
    troubled: AtomicBool,
    /// Its run holds a download place.
    placed: AtomicBool,
}

#[derive(Debug, Default)]
struct FeedTimes {
    requested: Option<Instant>,
    first_byte: Option<(Instant, u64)>,
}

impl Transfer {
    pub fn new(at: u64, end: u64) -> Arc<Transfer> {
        Arc::new(Transfer {
            at: AtomicU64::new(at),
            times: Mutex::default(),
            next: Mutex::new(None),
            end: AtomicU64::new(end),
            asked: AtomicU64::new(0),
            troubled: AtomicBool::new(false),
            placed: AtomicBool::new(false),
        })
    }

    pub fn set_troubled(&self, troubled: bool) {
        self.troubled.store(troubled, Ordering::Relaxed);
    }

    pub fn is_troubled(&self) -> bool {
        self.troubled.load(Ordering::Relaxed)
    }

    pub fn at(&self) -> u64 {
        self.at.load(Ordering::Relaxed)
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }

    pub fn set_end(&self, end: u64) {
        self.end.store(end, Ordering::Relaxed);
    }

    /// Its run sent a request for the stretch after this one, to `end`.
    pub fn ask(&self, end: u64) {
        self.asked.fetch_max(end, Ordering::Relaxed);
    }

    /// The last byte its run has asked the origin for.
    pub fn asked_end(&self) -> u64 {
        self.end().max(self.asked.load(Ordering::Relaxed))
    }

    /// Its run holds a download place now (false while it waits for one:
    /// `--max-downloads`, its origin's connections; a run gives its place
    /// up between chunks).
    pub fn set_placed(&self, placed: bool) {
        self.placed.store(placed, Ordering::Relaxed);
    }

    pub fn is_placed(&self) -> bool {
        self.placed.load(Ordering::Relaxed)
    }

    /// The transfer's request is going out now.
    pub fn requested(&self) {
        self.requested_at(Instant::now());
    }

    /// The request for these bytes left at `at` (unless one was recorded
    /// already).
    pub fn requested_at(&self, at: Instant) {
        let mut t = self.times.lock().unwrap();
        t.requested.get_or_insert(at);
    }

    /// `n` bytes arrived; returns the time to the first byte when these
    /// are the first.
    pub fn advanced(&self, n: u64) -> Option<Duration> {
        let at = self.at.fetch_add(n, Ordering::Relaxed);
        let mut t = self.times.lock().unwrap();
        if t.first_byte.is_some() {
            return None;
        }
        let now = Instant::now();
        t.first_byte = Some((now, at));
        Some(now - t.requested.unwrap_or(now))
    }

    /// Skips to `at` (a transfer resumed elsewhere, a run going on past
    /// other streams' stretches): its own rate is measured from here.
    pub fn jump(&self, at: u64) {
        let was = self.at.swap(at, Ordering::Relaxed);
        if was != at {
            let mut t = self.times.lock().unwrap();
            if t.first_byte.is_some() {
                t.first_byte = Some((Instant::now(), at));
            }
        }
    }

    /// When byte `pos` may be expected from this transfer, from its own
    /// rate once it has one, otherwise from `pace` (what this origin
    /// showed so far).
    pub fn eta(&self, pos: u64, pace: Pace) -> Duration {
        let at = self.at();
        let ahead = pos.saturating_sub(at);
        let t = self.times.lock().unwrap();
        let now = Instant::now();
        let (wait, rate) = match (t.requested, t.first_byte) {
            (_, Some((first, from))) => {
                let got = at.saturating_sub(from);
                let secs = (now - first).as_secs_f64();
                let own = if got >= RATE_SAMPLE && secs > 0.0 {
                    got as f64 / secs
                } else {
                    pace.rate
                };
                (Duration::ZERO, own)
            }
            (Some(sent), None) => (pace.ttfb.saturating_sub(now - sent), pace.rate),
            // Not even asked yet (a chunk head waiting for its turn).
            (None, None) => (pace.ttfb, pace.rate),
        };
        wait + Duration::from_secs_f64(ahead as f64 / rate.max(1.0))
    }
}

/// Bytes a transfer must have delivered before its own rate is trusted.
const RATE_SAMPLE: u64 = 64 * 1024;

/// One part of a chunk, filled in order from `start` up to `limit`.
#[derive(Debug)]
struct Part {
    start: u64,
    /// Where the part ends (exclusive); lowered when the part is cut.
    limit: u64,
    pieces: Vec<Bytes>,
    /// Where arriving bytes are copied to: one allocation of the part's
    /// length, which its pieces share. (Keeping the transfer's own buffers
    /// instead would hold each of the HTTP client's read buffers, several
    /// times the bytes they carry, for as long as the chunk lives.)
    buf: BytesMut,
    /// Offset of each piece within the chunk.
    starts: Vec<u64>,
    filled: u64,
    end: Option<Result<(), CacheError>>,
    /// The transfer filling it (None once it ended, or for a placeholder).
    feed: Option<Arc<Transfer>>,
}

impl Part {
    fn new(start: u64, limit: u64, feed: Option<Arc<Transfer>>) -> Part {
        Part {
            start,
            limit,
            pieces: Vec::new(),
            buf: BytesMut::new(),
            starts: Vec::new(),
            filled: 0,
            end: None,
            feed,
        }
    }

    /// The chunk offset the part is filled up to.
    fn reached(&self) -> u64 {
        self.start + self.filled
    }

    fn missing(&self) -> u64 {
        self.limit.saturating_sub(self.reached())
    }

    /// The bytes at chunk offset `offset` up to the end of their piece, if
    /// arrived.
    fn slice_at(&self, offset: u64) -> Option<Bytes> {
        if offset < self.start || offset >= self.reached() {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= offset) - 1;
        let within = (offset - self.starts[i]) as usize;
        Some(self.pieces[i].slice(within..))
    }

    fn fail(&mut self, e: &CacheError) {
        if !matches!(self.end, Some(Ok(()))) {
            self.end = Some(Err(e.clone()));
            self.feed = None;
        }
    }
}

#[derive(Debug)]
pub(crate) struct InFlight {
    len: u64,
    /// Ordered by start; together they cover `[0, len)`.
    parts: Mutex<Vec<Part>>,
    changed: watch::Sender<()>,
}

/// A part waiting for a transfer to reach a byte, as `Runs::hurry` sees it.
pub(crate) struct Behind {
    pub feed: Arc<Transfer>,
    /// Where the part ends (exclusive, chunk offset).
    pub limit: u64,
}

impl InFlight {
    /// A chunk with one part and no transfer (a placeholder, or a test's).
    pub fn new(len: u64) -> InFlight {
        InFlight::with_parts(len, vec![Part::new(0, len, None)])
    }

    /// A chunk fetched from `split` on by `tail`, and before it by `head`
    /// (when `split` > 0).
    pub fn claimed(
        len: u64,
        split: u64,
        tail: Arc<Transfer>,
        head: Option<Arc<Transfer>>,
    ) -> InFlight {
        let split = split.min(len);
        let mut parts = Vec::new();
        if split > 0 {
            parts.push(Part::new(0, split, head));
        }
        parts.push(Part::new(split, len, Some(tail)));
        InFlight::with_parts(len, parts)
    }

    fn with_parts(len: u64, parts: Vec<Part>) -> InFlight {
        #[cfg(any(test, feature = "testing"))]
        LIVE.fetch_add(1, Ordering::Relaxed);
        InFlight {
            len,
            parts: Mutex::new(parts),
            changed: watch::Sender::new(()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    fn update<T>(&self, f: impl FnOnce(&mut Vec<Part>) -> T) -> T {
        let out = f(&mut self.parts.lock().unwrap());
        self.changed.send_replace(());
        out
    }

    /// Bytes the part starting at `part` still needs (0 once it reached
    /// its limit, which a cut may have lowered).
    pub fn missing(&self, part: u64) -> u64 {
        self.with_part(part, Part::missing).unwrap_or(0)
    }

    /// `f` of the part starting at `part`, under the parts' lock.
    fn with_part<T>(&self, part: u64, f: impl FnOnce(&Part) -> T) -> Option<T> {
        let parts = self.parts.lock().unwrap();
        parts.iter().find(|p| p.start == part).map(f)
    }

    /// The chunk offset the part starting at `part` is filled up to, read
    /// under one lock (a cut between a read of its limit and one of what
    /// it misses would put the next byte anywhere).
    pub fn reached(&self, part: u64) -> u64 {
        self.with_part(part, Part::reached).unwrap_or(0)
    }

    /// Where the part starting at `part` ends now (exclusive).
    pub fn limit(&self, part: u64) -> u64 {
        self.with_part(part, |p| p.limit).unwrap_or(0)
    }

    /// Appends bytes to the part starting at `part`, never past its limit;
    /// returns what did not fit.
    pub fn push_at(&self, part: u64, mut piece: Bytes) -> Option<Bytes> {
        if piece.is_empty() {
            return None;
        }
        self.update(|parts| {
            let p = parts.iter_mut().find(|p| p.start == part)?;
            if p.end.is_some() {
                return Some(piece);
            }
            let room = p.missing() as usize;
            let rest = (piece.len() > room).then(|| piece.split_off(room));
            if !piece.is_empty() {
                if p.buf.capacity() < piece.len() {
                    p.buf = BytesMut::with_capacity(room);
                }
                p.buf.extend_from_slice(&piece);
                p.starts.push(p.reached());
                p.filled += piece.len() as u64;
                p.pieces.push(p.buf.split().freeze());
            }
            rest
        })
    }

    /// Ends the part starting at `part`: complete (when it reached its
    /// limit) or failed.
    pub fn finish(&self, part: u64, result: Result<(), CacheError>) {
        self.update(|parts| {
            if let Some(p) = parts.iter_mut().find(|p| p.start == part) {
                match result {
                    Ok(()) if p.missing() == 0 => {
                        p.end.get_or_insert(Ok(()));
                        p.feed = None;
                    }
                    Ok(()) => p.fail(&CacheError::Cancelled),
                    Err(e) => p.fail(&e),
                }
            }
        });
    }

    /// Fails whatever is not complete yet.
    pub fn fail(&self, e: CacheError) {
        self.update(|parts| parts.iter_mut().for_each(|p| p.fail(&e)));
    }

    /// The last byte the transfers filling this chunk asked for (None
    /// when none fills it now).
    pub fn asked_end(&self) -> Option<u64> {
        let parts = self.parts.lock().unwrap();
        parts
            .iter()
            .filter_map(|p| p.feed.as_ref().map(|f| f.asked_end()))
            .max()
    }

    /// The transfer a reader at `offset` waits for, when the byte has not
    /// arrived and the part is still being filled.
    pub fn behind(&self, offset: u64) -> Option<Behind> {
        let parts = self.parts.lock().unwrap();
        let p = parts
            .iter()
            .find(|p| p.start <= offset && offset < p.limit)?;
        if offset < p.reached() || p.end.is_some() {
            return None;
        }
        Some(Behind {
            feed: p.feed.clone()?,
            limit: p.limit,
        })
    }

    /// Whether a reader at `offset` waits for a transfer under way (its
    /// run holding a download place): it outruns the origin. One whose
    /// bytes wait for a place does not: more streams would only want more
    /// places.
    pub fn outruns(&self, offset: u64) -> bool {
        self.behind(offset).is_some_and(|b| b.feed.is_placed())
    }

    /// Cuts the part that holds `offset` there, if its bytes have not
    /// reached `offset` yet: the part ends at `offset` and a new part from
    /// `offset` to its old limit is filled by `feed`. Returns the transfer
    /// that filled the part, and the part's old limit.
    pub fn cut(&self, offset: u64, feed: Arc<Transfer>) -> Option<(Arc<Transfer>, u64)> {
        self.update(|parts| {
            let i = parts
                .iter()
                .position(|p| p.start <= offset && offset < p.limit)?;
            let p = &mut parts[i];
            if offset <= p.reached() || p.end.is_some() {
                return None;
            }
            let old = p.feed.clone()?;
            let limit = p.limit;
            p.limit = offset;
            parts.insert(i + 1, Part::new(offset, limit, Some(feed)));
            Some((old, limit))
        })
    }

    /// None while downloading; then whether every byte arrived.
    fn outcome(&self) -> Option<Result<(), CacheError>> {
        let parts = self.parts.lock().unwrap();
        let mut done = true;
        for p in parts.iter() {
            match &p.end {
                Some(Err(e)) => return Some(Err(e.clone())),
                Some(Ok(())) => {}
                None => done = false,
            }
        }
        done.then_some(Ok(()))
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.outcome(), Some(Ok(())))
    }

    #[cfg(test)]
    pub fn is_failed(&self) -> bool {
        matches!(self.outcome(), Some(Err(_)))
    }

    /// Why a part failed, if one did.
    pub fn failure(&self) -> Option<CacheError> {
        self.outcome().and_then(Result::err)
    }

    /// Waits until every byte arrived or a part failed.
    pub async fn wait(&self) -> Result<(), CacheError> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(r) = self.outcome() {
                return r;
            }
            let _ = rx.changed().await;
        }
    }

    /// The pieces of a complete chunk, in order, for writing it to disk.
    pub fn pieces(&self) -> Vec<Bytes> {
        let parts = self.parts.lock().unwrap();
        parts
            .iter()
            .flat_map(|p| p.pieces.iter().cloned())
            .collect()
    }

    /// The bytes at `offset` if they arrived (at most to the end of one
    /// piece); `Ok(None)` when they have not yet.
    pub fn try_read_at(&self, offset: u64) -> Result<Option<Bytes>, CacheError> {
        let parts = self.parts.lock().unwrap();
        let Some(p) = parts.iter().find(|p| p.start <= offset && offset < p.limit) else {
            return Ok(None);
        };
        if let Some(b) = p.slice_at(offset) {
            return Ok(Some(b));
        }
        match &p.end {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(None),
        }
    }

    /// Returns the bytes available at `offset` (at most up to the end of
    /// one piece), waiting for them to arrive. `Ok(None)` means `offset` is
    /// the chunk's end.
    pub async fn read_at(&self, offset: u64) -> Result<Option<Bytes>, CacheError> {
        if offset >= self.len {
            return Ok(None);
        }
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(b) = self.try_read_at(offset)? {
                return Ok(Some(b));
            }
            // The sender lives as long as `self`, so this cannot fail.
            let _ = rx.changed().await;
        }
    }
}

/// Downloading chunks alive in this process (test builds only): what the
/// integration tests look at to see a chunk's buffers freed.
#[cfg(any(test, feature = "testing"))]
static LIVE: AtomicU64 = AtomicU64::new(0);

#[cfg(any(test, feature = "testing"))]
impl Drop for InFlight {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many downloading chunks (`InFlight`s, with their buffers) are
/// alive in this process, whatever server they belong to.
#[cfg(any(test, feature = "testing"))]
pub fn live() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(c: &InFlight, mut off: u64) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(b) = c.read_at(off).await.unwrap() {
            off += b.len() as u64;
            got.extend_from_slice(&b);
        }
        got
    }

    fn feed() -> Arc<Transfer> {
        Transfer::new(0, u64::MAX)
    }

    #[tokio::test]
    async fn readers_follow_the_writer() {
        let c = Arc::new(InFlight::claimed(6, 0, feed(), None));
        let reader = {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, 0).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(c.push_at(0, Bytes::from_static(b"abc")), None);
        tokio::task::yield_now().await;
        let rest = c.push_at(0, Bytes::from_static(b"defgh"));
        assert_eq!(
            rest.as_deref(),
            Some(&b"gh"[..]),
            "never past the part's end"
        );
        c.finish(0, Ok(()));
        assert_eq!(reader.await.unwrap(), b"abcdef");
        assert_eq!(&c.read_at(4).await.unwrap().unwrap()[..], b"ef");
        assert!(c.is_complete());
        assert_eq!(c.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn head_and_tail() {
        let c = Arc::new(InFlight::claimed(6, 2, feed(), Some(feed())));
        assert!(!c.is_complete());
        // A reader at the split gets tail bytes before the head arrives.
        c.push_at(2, Bytes::from_static(b"cd"));
        assert_eq!(&c.read_at(2).await.unwrap().unwrap()[..], b"cd");
        let from_start = {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, 0).await })
        };
        c.push_at(2, Bytes::from_static(b"ef"));
        c.finish(2, Ok(()));
        assert!(!c.is_complete(), "head still missing");
        c.push_at(0, Bytes::from_static(b"ab"));
        c.finish(0, Ok(()));
        assert_eq!(from_start.await.unwrap(), b"abcdef");
        assert_eq!(c.pieces().concat(), b"abcdef");
        assert_eq!(c.wait().await, Ok(()));
    }

    /// A reader outruns only a transfer whose request went out, and only
    /// ahead of the bytes it brought.
    #[tokio::test]
    async fn only_a_transfer_under_way_is_outrun() {
        let t = feed();
        let c = InFlight::claimed(8, 0, t.clone(), None);
        assert!(!c.outruns(0), "waiting for a download place");
        t.set_placed(true);
        assert!(c.outruns(0));
        t.set_placed(false);
        assert!(!c.outruns(0), "its run gave its place up between chunks");
        t.set_placed(true);
        c.push_at(0, Bytes::from_static(b"ab"));
        assert!(!c.outruns(1), "byte 1 is here");
        assert!(c.outruns(2));
        c.finish(0, Err(CacheError::Cancelled));
        assert!(!c.outruns(2), "the part ended");
        assert!(!InFlight::new(8).outruns(0), "no transfer");
    }

    /// A cut part ends at the cut; the new part fills the rest, and the
    /// chunk is whole once both are.
    #[tokio::test]
    async fn cut_parts_make_one_chunk() {
        let (first, second) = (feed(), feed());
        let c = Arc::new(InFlight::claimed(8, 0, first.clone(), None));
        c.push_at(0, Bytes::from_static(b"ab"));
        assert!(c.cut(1, feed()).is_none(), "byte 1 already arrived");
        let behind = c.behind(5).expect("byte 5 waits for the first transfer");
        assert!(Arc::ptr_eq(&behind.feed, &first));
        assert_eq!(behind.limit, 8);
        let (old, limit) = c.cut(5, second.clone()).unwrap();
        assert!(Arc::ptr_eq(&old, &first));
        assert_eq!(limit, 8);
        assert!(c.cut(5, feed()).is_none(), "already cut there");
        assert!(Arc::ptr_eq(&c.behind(6).unwrap().feed, &second));
        assert_eq!(c.limit(0), 5);
        assert_eq!(c.reached(0), 2, "a cut leaves what arrived");
        assert_eq!(c.reached(5), 5);
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, 5).await })
        };
        assert_eq!(
            c.push_at(5, Bytes::from_static(b"fghXX")).as_deref(),
            Some(&b"XX"[..])
        );
        c.finish(5, Ok(()));
        assert_eq!(waiting.await.unwrap(), b"fgh");
        assert!(!c.is_complete());
        let rest = c.push_at(0, Bytes::from_static(b"cdeFG"));
        assert_eq!(
            rest.as_deref(),
            Some(&b"FG"[..]),
            "the first part stops at the cut"
        );
        assert_eq!(c.missing(0), 0);
        c.finish(0, Ok(()));
        assert_eq!(c.pieces().concat(), b"abcdefgh");
        assert_eq!(c.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn failure_reaches_waiting_readers() {
        let c = Arc::new(InFlight::claimed(6, 0, feed(), None));
        c.push_at(0, Bytes::from_static(b"ab"));
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.read_at(2).await })
        };
        tokio::task::yield_now().await;
        c.fail(CacheError::Cancelled);
        assert_eq!(waiting.await.unwrap(), Err(CacheError::Cancelled));
        // Bytes that arrived are still readable.
        assert_eq!(&c.read_at(1).await.unwrap().unwrap()[..], b"b");
        assert!(c.is_failed());
        assert_eq!(c.wait().await, Err(CacheError::Cancelled));
        // A part ended before its limit failed.
        let c = InFlight::claimed(6, 0, feed(), None);
        c.push_at(0, Bytes::from_static(b"ab"));
        c.finish(0, Ok(()));
        assert!(c.is_failed());
    }

    /// A transfer's expected arrival of a byte: from the origin's pace
    /// before it has a rate of its own.
    #[tokio::test(start_paused = true)]
    async fn eta_from_pace_then_own_rate() {
        let pace = Pace::new(Duration::from_millis(50), 1e6);
        let f = Transfer::new(1000, u64::MAX);
        assert_eq!(
            f.eta(1000, pace),
            Duration::from_millis(50),
            "not asked yet"
        );
        f.requested();
        tokio::time::advance(Duration::from_millis(20)).await;
        let eta = f.eta(1000 + 100_000, pace);
        assert_eq!(
            eta,
            Duration::from_millis(130),
            "30 ms to its first byte, 100 ms more"
        );
        assert!(f.advanced(1).is_some());
        f.advanced(RATE_SAMPLE);
        tokio::time::advance(Duration::from_millis(100)).await;
        // Its own rate now: 64 KiB (and a byte) in 100 ms.
        let eta = f.eta(f.at() + 65536 * 2, pace).as_millis();
        assert!((195..=200).contains(&eta), "{eta} ms");
    }
}
