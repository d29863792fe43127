//! Where a media's players are reading: each player's playhead (chunk,
//! byte, bytes read, range end), the players that left (for the grace),
//! the byte rate a player reading at its own pace shows, and the watchers
//! that runs wait on as playheads move. What the playheads mean for
//! read-ahead is `readahead.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::readahead::{Head, Window};
use super::watch::Watchers;

/// The players of one media.
#[derive(Debug)]
pub(crate) struct Playheads {
    chunk_size: u64,
    heads: Mutex<Vec<Arc<PlayheadState>>>,
    /// What the players' ends are counted from.
    epoch: Instant,
    /// Runs waiting for a chunk to be wanted or not: woken when a
    /// playhead's window moves over their chunk, or the media goes.
    pub watchers: Watchers,
    /// The chunk where the last finished player stopped (u64::MAX: none),
    /// to recognise a player reading on in a new request.
    last_ended: AtomicU64,
    /// How much the last finished player had read (and of that, from the
    /// cache): a player reading on in a new request keeps the read-ahead
    /// it had earned.
    last_read: AtomicU64,
    last_cached: AtomicU64,
    /// When the last finished player's reading began (its first request).
    last_began: Mutex<Option<Instant>>,
    /// Bytes per second a player that reads at its own pace (playback) was
    /// seen to take (0: none seen yet).
    observed_rate: AtomicU64,
}

impl Playheads {
    pub fn new(chunk_size: u64) -> Playheads {
        Playheads {
            chunk_size: chunk_size.max(1),
            heads: Mutex::default(),
            epoch: Instant::now(),
            watchers: Watchers::default(),
            last_ended: AtomicU64::new(u64::MAX),
            last_read: AtomicU64::new(0),
            last_cached: AtomicU64::new(0),
            last_began: Mutex::new(None),
            observed_rate: AtomicU64::new(0),
        }
    }

    /// Whether a request starting at chunk `index` goes on where the last
    /// finished one stopped (a player reading in consecutive ranges).
    pub fn continues(&self, index: u64) -> bool {
        let last = self.last_ended.load(Ordering::Relaxed);
        last != u64::MAX && (index == last || index == last + 1)
    }

    /// Starts tracking a player reading from chunk `index`; it wants
    /// read-ahead up to chunk `limit` at most. Players that left more than
    /// `grace` ago are forgotten here.
    pub fn start(self: &Arc<Self>, index: u64, limit: u64, grace: Duration) -> Playhead {
        // A player reading on where the last one stopped keeps what it read.
        let (read, cached, began) = match self.continues(index) {
            true => (
                self.last_read.load(Ordering::Relaxed),
                self.last_cached.load(Ordering::Relaxed),
                *self.last_began.lock().unwrap(),
            ),
            false => (0, 0, None),
        };
        let state = Arc::new(PlayheadState {
            chunk: AtomicU64::new(index),
            pos: AtomicU64::new(index.saturating_mul(self.chunk_size)),
            read: AtomicU64::new(read),
            cached: AtomicU64::new(cached),
            began: began.unwrap_or_else(Instant::now),
            limit,
            ended: Ended::new(self.epoch),
        });
        {
            let mut heads = self.heads.lock().unwrap();
            forget_left(&mut heads, Instant::now(), grace);
            heads.push(state.clone());
        }
        self.watchers.wake(index, self.reach(&state));
        Playhead {
            heads: self.clone(),
            state,
            pace: Mutex::new(PaceSample {
                started: Instant::now(),
                mark: None,
                waited: Duration::ZERO,
            }),
        }
    }

    /// The players reading, and those that left (for the grace), as the
    /// read-ahead policy sees them.
    pub fn heads(&self) -> Vec<Head> {
        self.with_heads(|heads| heads.collect())
    }

    /// Runs `f` over the players as the policy sees them, under the lock
    /// and without collecting them: runs ask this for every piece.
    pub fn with_heads<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = Head>) -> R) -> R {
        let now = Instant::now();
        let heads = self.heads.lock().unwrap();
        f(&mut heads.iter().map(|h| h.head(now)))
    }

    /// Whether a player is reading now.
    pub fn any_live(&self) -> bool {
        let heads = self.heads.lock().unwrap();
        heads.iter().any(|h| h.ended.get().is_none())
    }

    /// The last chunk any live player may want (u64::MAX when one reads on
    /// to the end, or none is reading).
    pub fn read_limit(&self) -> u64 {
        let heads = self.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.ended.get().is_none())
            .map(|h| h.limit)
            .max()
            .unwrap_or(u64::MAX)
    }

    /// The byte rate a player reading at its own pace showed (0: none).
    pub fn observed_rate(&self) -> u64 {
        self.observed_rate.load(Ordering::Relaxed)
    }

    /// How many players are remembered (reading, or left within a grace).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    /// The chunk a player's window reaches whatever the window's length.
    fn reach(&self, h: &PlayheadState) -> u64 {
        Window::reach(self.chunk_size, &h.place())
    }
}

/// How many players that left are remembered for the grace, at least (the
/// most recent ones, when that many left within it); at most twice as
/// many. A player reading on in a new request is one of them; without a
/// bound, a media asked for thousands of short ranges a second would keep
/// every one for the grace, and each request and each piece of a run
/// would walk them all.
const MAX_LEFT: usize = 32;

/// Forgets players that left more than `grace` ago and, once more than
/// `2 * MAX_LEFT` are remembered, all but the `MAX_LEFT` that left last
/// (so a media asked for many short ranges sorts its players that left
/// once every `MAX_LEFT` requests, not at every one).
fn forget_left(heads: &mut Vec<Arc<PlayheadState>>, now: Instant, grace: Duration) {
    let mut left = 0;
    heads.retain(|h| match h.ended.get() {
        None => true,
        Some(t) if now - t < grace => {
            left += 1;
            true
        }
        Some(_) => false,
    });
    if left <= 2 * MAX_LEFT {
        return;
    }
    let mut ends: Vec<Instant> = heads.iter().filter_map(|h| h.ended.get()).collect();
    // The MAX_LEFT-th newest end; ties with it are kept too.
    let (_, cut, _) = ends.select_nth_unstable_by(MAX_LEFT - 1, |a, b| b.cmp(a));
    let cut = *cut;
    heads.retain(|h| h.ended.get().is_none_or(|t| t >= cut));
}

/// When a player left, without a lock: nanoseconds after its media's
/// epoch, plus one (0: it reads on).
#[derive(Debug)]
struct Ended {
    epoch: Instant,
    after: AtomicU64,
}

impl Ended {
    fn new(epoch: Instant) -> Ended {
        Ended {
            epoch,
            after: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Option<Instant> {
        match self.after.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    fn set(&self, t: Instant) {
        let n = (t - self.epoch).as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.after.store(n + 1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct PlayheadState {
    chunk: AtomicU64,
    /// The byte this player reads next.
    pos: AtomicU64,
    /// Bytes this player has read (in this request and, when it reads on
    /// in consecutive requests, the ones before).
    read: AtomicU64,
    /// Of those, bytes read from chunks cached before it began.
    cached: AtomicU64,
    /// When it began reading (in its first request, when it reads on).
    began: Instant,
    /// The last chunk this player may want (its range's end, unless it reads
    /// to the end of the media).
    limit: u64,
    ended: Ended,
}

impl PlayheadState {
    /// Where it reads, for window arithmetic that does not ask whether it
    /// left: no lock, no clock (a player's every piece asks this).
    fn place(&self) -> Head {
        Head {
            at: self.chunk.load(Ordering::Relaxed),
            pos: self.pos.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            limit: self.limit,
            left: None,
        }
    }

    fn head(&self, now: Instant) -> Head {
        Head {
            at: self.chunk.load(Ordering::Relaxed),
            pos: self.pos.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            limit: self.limit,
            left: self.ended.get().map(|t| now - t),
        }
    }
}

/// A player's position in one media; ends when dropped.
#[derive(Debug)]
pub(crate) struct Playhead {
    heads: Arc<Playheads>,
    state: Arc<PlayheadState>,
    pace: Mutex<PaceSample>,
}

/// What a player read over time, to learn a media's byte rate from a player
/// that reads at its own pace: over each PACE_SAMPLE, if it hardly waited
/// for spool, what it read is what playback takes.
#[derive(Debug)]
struct PaceSample {
    started: Instant,
    /// The start of the sample going on: when, bytes read, time waited.
    mark: Option<(Instant, u64, Duration)>,
    /// Time spent waiting for bytes that had not arrived yet.
    waited: Duration,
}

/// Time before a player's reading is sampled (its connection's buffers
/// fill first), and the length of a sample.
const PACE_SETTLE: Duration = Duration::from_secs(1);
const PACE_SAMPLE: Duration = Duration::from_secs(2);

impl Playhead {
    pub fn set(&self, index: u64) {
        let h = &self.heads;
        let before = h.reach(&self.state);
        let was = self.state.chunk.swap(index, Ordering::Relaxed);
        if was != index {
            // Chunks leave the window behind it and enter it ahead.
            let after = h.reach(&self.state);
            h.watchers.wake(was.min(index), before.max(after));
        }
    }

    /// When this player began reading (its first request, when it reads
    /// on in consecutive ones).
    pub fn began(&self) -> Instant {
        self.state.began
    }

    /// The last chunk of this player's read-ahead window.
    pub fn window_end(&self, w: &Window) -> u64 {
        w.end(&self.state.place())
    }

    /// The player got `n` bytes (`cached`: from a chunk cached before it
    /// began) and reads at `pos` next.
    pub fn advance(&self, pos: u64, n: u64, cached: bool) {
        let old_pos = self.state.pos.swap(pos, Ordering::Relaxed);
        let cached_before = match cached {
            true => self.state.cached.fetch_add(n, Ordering::Relaxed),
            false => self.state.cached.load(Ordering::Relaxed),
        };
        let before = self.state.read.fetch_add(n, Ordering::Relaxed);
        // Runs waiting for the window to reach their chunk look again only
        // when its far end moved into another chunk, not at every piece.
        let h = &self.heads;
        let head = self.state.place();
        let cs = h.chunk_size;
        let (was, now) = (
            Window::reach(
                cs,
                &Head {
                    pos: old_pos,
                    read: before,
                    cached: cached_before,
                    ..head
                },
            ),
            Window::reach(cs, &head),
        );
        if was != now {
            h.watchers.wake(was.min(now), was.max(now));
        }
        self.sample(before.saturating_add(n));
    }

    /// The player waited `d` for bytes that had not arrived.
    pub fn waited(&self, d: Duration) {
        self.pace.lock().unwrap().waited += d;
    }

    /// Ends a sample of this player's reading once it is long enough; a
    /// player that waited for spool less than a tenth of it read at its
    /// own pace, which is the media's byte rate.
    fn sample(&self, read: u64) {
        let now = Instant::now();
        let mut p = self.pace.lock().unwrap();
        let (at, was, waited) = match p.mark {
            Some(mark) => mark,
            None => {
                if now - p.started >= PACE_SETTLE {
                    p.mark = Some((now, read, p.waited));
                }
                return;
            }
        };
        let took = now - at;
        if took < PACE_SAMPLE {
            return;
        }
        if p.waited - waited < took / 10 && read > was {
            let rate = (read - was) as f64 / took.as_secs_f64();
            self.heads
                .observed_rate
                .store(rate as u64, Ordering::Relaxed);
        }
        p.mark = Some((now, read, p.waited));
    }
}

impl Drop for Playhead {
    fn drop(&mut self) {
        self.state.ended.set(Instant::now());
        let at = self.state.chunk.load(Ordering::Relaxed);
        let read = self.state.read.load(Ordering::Relaxed);
        self.heads.last_read.store(read, Ordering::Relaxed);
        let cached = self.state.cached.load(Ordering::Relaxed);
        self.heads.last_cached.store(cached, Ordering::Relaxed);
        *self.heads.last_began.lock().unwrap() = Some(self.state.began);
        self.heads.last_ended.store(at, Ordering::Relaxed);
        let reach = self.heads.reach(&self.state);
        self.heads.watchers.wake(at, reach);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_players_that_left_last_are_remembered() {
        let heads = Arc::new(Playheads::new(1024));
        let grace = Duration::from_secs(3600);
        let live: Vec<Playhead> = (0..5)
            .map(|i| heads.start(i * 10, u64::MAX, grace))
            .collect();
        for i in 0..1000 {
            drop(heads.start(i, i, grace));
        }
        // One more start after 1000 left: the live five, the new one,
        // and of those that left at least the newest MAX_LEFT, never more
        // than twice as many.
        let last = heads.start(2000, u64::MAX, grace);
        let left = heads.len() - live.len() - 1;
        assert!(
            (MAX_LEFT..=2 * MAX_LEFT).contains(&left),
            "{left} remembered"
        );
        assert_eq!(
            heads.with_heads(|h| h.filter(|h| h.left.is_none()).count()),
            6
        );
        // The one that left last is among those kept: a player reading on
        // where it stopped keeps its window.
        assert!(heads.with_heads(|h| h.filter(|h| h.at == 999 && h.left.is_some()).count() == 1));
        assert!(heads.with_heads(|h| h.filter(|h| h.at == 0 && h.limit == 0).count() == 0));
        drop(last);
    }

    #[tokio::test]
    async fn players_that_left_before_the_grace_are_forgotten() {
        tokio::time::pause();
        let heads = Arc::new(Playheads::new(1024));
        let grace = Duration::from_secs(5);
        drop(heads.start(1, 1, grace));
        drop(heads.start(2, 2, grace));
        tokio::time::advance(Duration::from_secs(6)).await;
        let p = heads.start(3, u64::MAX, grace);
        assert_eq!(heads.len(), 1);
        drop(p);
    }
}
