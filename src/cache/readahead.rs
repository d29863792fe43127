//! The read-ahead policy, whole: which chunks the players of a media want,
//! how far a download asks the origin for, and what eviction keeps. Pure:
//! no clock, no lock, no IO. `Media` hands it its players as [`Head`]s;
//! runs, eviction and the admin API ask it with one [`Window`].
//!
//! A player's window starts at the chunk it reads and is as long as what
//! it read past its first piece ([`FIRST_PIECE`]), so it doubles as the
//! player reads on and a probe that reads a little and leaves asks for
//! nothing ahead. Bytes it read from chunks cached before it began count
//! for one chunk at most ([`Head::earned`]): a player reading a cached
//! stretch at the disk's speed is filling its buffer, not telling how far
//! it will read, so a warm replay asks the origin for at most the chunk
//! after the ones it reads until it reads at the origin's pace again.
//! (Chunks its own read-ahead brought count in full.) It never passes the media's window length
//! ([`Policy::window`]: `--read-ahead` in bytes, or the chunks its
//! playback takes for the time given where the byte rate is known) nor
//! the last chunk of the player's range. A player that left is still
//! wanted for `--read-ahead-grace` (its next request usually follows at
//! once); eviction keeps the windows of the players reading now.

use std::time::Duration;

/// Bytes a player reads before any read-ahead starts for it: a probe or a
/// seek preview that reads a little and leaves costs the origin no more
/// than the chunk it read from. (What spool counts is what it sent, which
/// runs ahead of what the player read by the connection's buffers:
/// --send-queue, hyper's 64 KiB, the player's own receive buffer.)
pub const FIRST_PIECE: u64 = 512 * 1024;

/// A window given as a time of media whose byte rate is not known yet
/// spans this many bytes (then bounded by the longest window).
pub const UNKNOWN_RATE_READ_AHEAD: u64 = 32 << 20;

/// How long after a player last waited for bytes at a transfer's front
/// its media still counts as outrunning its transfers.
pub const OUTRUN_FOR: Duration = Duration::from_secs(2);

/// A transfer at least this fast (bytes a second) is not held back by its
/// connection: more streams would only add requests.
pub const UNTHROTTLED: f64 = 64.0 * 1024.0 * 1024.0;

/// The least one stream's stretch of the window holds: a smaller one
/// spends about as long asking as transferring.
pub const MIN_STRIDE: u64 = 1 << 20;

/// What the transfers of a media must bring together, over playback's
/// byte rate.
const NEED_MARGIN: f64 = 1.5;

/// How many streams (concurrent ranged requests) a media's chunks ahead
/// are fetched over: one, unless one transfer brings less than its
/// players take. `max` is what its origin allows now
/// (`--streams-per-media`, lowered while it asks for pauses);
/// `transfer_rate` what one transfer of it brings (None: not measured
/// yet); `byte_rate` its playback's, when known; `outrun` whether a
/// player waited at a transfer's front lately (a sequential reader, or
/// a player filling its buffer, that takes more than one transfer
/// brings). A player outrunning its transfer gets them all; otherwise
/// as many as playback needs with a margin.
pub fn streams(
    max: usize,
    transfer_rate: Option<f64>,
    byte_rate: Option<u64>,
    outrun: bool,
) -> usize {
    let Some(rate) = transfer_rate.filter(|r| *r > 0.0) else {
        return 1;
    };
    if max <= 1 || rate >= UNTHROTTLED {
        return 1;
    }
    if outrun {
        return max;
    }
    match byte_rate {
        Some(b) if b > 0 => ((b as f64 * NEED_MARGIN / rate).ceil() as usize).clamp(1, max),
        _ => 1,
    }
}

/// The read-ahead settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The longest window, in bytes: `--read-ahead` given in bytes, or
    /// `--read-ahead-limit` when it is given as a time.
    pub max_bytes: u64,
    /// `--read-ahead` given as a time of media.
    pub time: Option<Duration>,
    /// How long a player that left still wants its window.
    pub grace: Duration,
}

impl Policy {
    /// The window of a media with chunks of `chunk_size` and playback of
    /// `byte_rate` bytes a second (when known).
    pub fn window(&self, chunk_size: u64, byte_rate: Option<u64>) -> Window {
        let chunk_size = chunk_size.max(1);
        let max = self.max_bytes.div_ceil(chunk_size);
        let chunks = match self.time {
            None => max,
            Some(time) => {
                let bytes = match byte_rate {
                    Some(rate) => (rate as f64 * time.as_secs_f64()) as u64,
                    None => UNKNOWN_RATE_READ_AHEAD,
                };
                bytes.div_ceil(chunk_size).clamp(1, max.max(1))
            }
        };
        Window { chunk_size, chunks }
    }
}

/// One player reading a media, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The chunk it reads.
    pub at: u64,
    /// The byte it reads next.
    pub pos: u64,
    /// Bytes it has read (in this request, and in the ones before when it
    /// reads on in consecutive requests).
    pub read: u64,
    /// Of those, bytes read from chunks cached before it began.
    pub cached: u64,
    /// The last chunk it may want (its range's end).
    pub limit: u64,
    /// How long ago it left; None while it reads.
    pub left: Option<Duration>,
}

impl Head {
    /// What its window is earned with: the bytes it read, those of chunks
    /// cached before it began counting for one chunk at most.
    pub fn earned(&self, chunk_size: u64) -> u64 {
        let cached = self.cached.min(self.read);
        self.read - cached + cached.min(chunk_size)
    }

    fn live(&self) -> bool {
        self.left.is_none()
    }

    fn within(&self, grace: Duration) -> bool {
        self.left.is_none_or(|t| t < grace)
    }
}

/// What the players that want a chunk ask of it together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanting {
    /// The last chunk their windows reach.
    pub reach: u64,
    /// The most bytes one of them has earned its window with
    /// ([`Head::earned`]).
    pub read: u64,
    /// The last chunk one of them may want (its range's end).
    pub limit: u64,
}

/// One media's window under the policy: its length in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    chunk_size: u64,
    chunks: u64,
}

impl Window {
    /// The longest a player's window gets, in chunks after the one it reads.
    #[cfg(test)]
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// How many chunks one request asks for at most when a media's chunks
    /// ahead come over `streams` streams: the window shared among them,
    /// so each stream has its own stretch of it.
    pub fn stride(&self, streams: usize) -> u64 {
        (self.chunks / streams.max(1) as u64).max(1)
    }

    /// The most streams the window can be shared among, each with at
    /// least [`MIN_STRIDE`] bytes of it.
    pub fn max_streams(&self) -> usize {
        let bytes = self.chunks.saturating_mul(self.chunk_size);
        usize::try_from(bytes / MIN_STRIDE)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The chunk a player's window reaches whatever the window's length:
    /// its position plus what it read past its first piece, never before
    /// the chunk it reads nor past its range. (Runs waiting for a chunk are
    /// woken as this moves.)
    pub fn reach(chunk_size: u64, h: &Head) -> u64 {
        let ahead = h.earned(chunk_size).saturating_sub(FIRST_PIECE);
        (h.pos.saturating_add(ahead) / chunk_size.max(1))
            .max(h.at)
            .min(h.limit)
    }

    /// The last chunk of a player's window.
    pub fn end(&self, h: &Head) -> u64 {
        Window::reach(self.chunk_size, h).min(h.at.saturating_add(self.chunks))
    }

    fn covers(&self, h: &Head, index: u64) -> bool {
        h.at <= index && index <= self.end(h)
    }

    /// Whether some player reads chunk `index` or has it in its window, or
    /// did so less than `grace` ago (runs ask with other graces, down to
    /// none).
    pub fn wanted(
        &self,
        heads: impl IntoIterator<Item = Head>,
        index: u64,
        grace: Duration,
    ) -> bool {
        heads
            .into_iter()
            .any(|h| h.within(grace) && self.covers(&h, index))
    }

    /// Whether eviction must leave chunk `index` alone: a player reading
    /// now has it in its window. (Players that left do not count.)
    pub fn keeps(&self, heads: impl IntoIterator<Item = Head>, index: u64) -> bool {
        heads
            .into_iter()
            .any(|h| h.live() && self.covers(&h, index))
    }

    /// What the players reading now that want chunk `index` ask of it
    /// together; None when none does. Players elsewhere in the media do
    /// not count.
    pub fn wanting(&self, heads: impl IntoIterator<Item = Head>, index: u64) -> Option<Wanting> {
        heads
            .into_iter()
            .filter(|h| h.live() && self.covers(h, index))
            .map(|h| Wanting {
                reach: self.end(&h),
                read: h.earned(self.chunk_size),
                limit: h.limit,
            })
            .reduce(|a, b| Wanting {
                reach: a.reach.max(b.reach),
                read: a.read.max(b.read),
                limit: a.limit.max(b.limit),
            })
    }

    /// Whether a player reading now is at most two windows before chunk
    /// `index`: reading towards it (its window reaches the chunk as it
    /// reads on), so a run waiting there keeps waiting.
    pub fn approaching(&self, heads: impl IntoIterator<Item = Head>, index: u64) -> bool {
        let span = self.chunks.saturating_mul(2);
        heads
            .into_iter()
            .any(|h| h.live() && h.at <= index && index - h.at <= span)
    }

    /// Whether a player reading now is at chunk `index`: it waits for it.
    pub fn reading_at(heads: impl IntoIterator<Item = Head>, index: u64) -> bool {
        heads.into_iter().any(|h| h.live() && h.at == index)
    }

    /// Whether a player reading now at chunk `index` reads on past its
    /// first piece, towards the chunks after it.
    pub fn reading_on(heads: impl IntoIterator<Item = Head>, index: u64) -> bool {
        heads
            .into_iter()
            .any(|h| h.live() && h.at == index && h.read > FIRST_PIECE && h.limit > index)
    }

    /// The last chunk a download's next request from chunk `index` asks
    /// for (before the caller bounds it by chunks somebody else has and the
    /// media's end): as far as the windows of the players that want
    /// `index` reach, and at least `grow` chunks past it (a run that is
    /// read on asks for twice as much each time), but never more whole
    /// chunks than its players have read (a probe that read a little and
    /// left costs one chunk at a time), never past the window's length,
    /// never past the end of their ranges.
    pub fn stretch_last(
        &self,
        heads: impl IntoIterator<Item = Head>,
        index: u64,
        grow: u64,
    ) -> u64 {
        let w = self.wanting(heads, index).unwrap_or(Wanting {
            reach: index,
            read: 0,
            limit: index,
        });
        let grow = grow.min(w.read / self.chunk_size).min(self.chunks);
        w.reach
            .max(index.saturating_add(grow))
            .min(w.limit)
            .max(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    const GRACE: Duration = Duration::from_secs(3);

    fn bytes(max_bytes: u64) -> Policy {
        Policy {
            max_bytes,
            time: None,
            grace: GRACE,
        }
    }

    fn timed(secs: u64, limit: u64) -> Policy {
        Policy {
            max_bytes: limit,
            time: Some(Duration::from_secs(secs)),
            grace: GRACE,
        }
    }

    /// A player that started at byte `from` and has read `read` bytes
    /// since (chunks of 1 MiB), reading on to the end.
    fn reader(from: u64, read: u64) -> Head {
        let pos = from + read;
        Head {
            at: pos / MIB,
            pos,
            read,
            cached: 0,
            limit: u64::MAX,
            left: None,
        }
    }

    /// [`reader`], with `cached` of what it read from the cache.
    fn warm(from: u64, read: u64, cached: u64) -> Head {
        Head {
            cached,
            ..reader(from, read)
        }
    }

    fn left(h: Head, ago: Duration) -> Head {
        Head {
            left: Some(ago),
            ..h
        }
    }

    /// Each case: a policy, the media's byte rate, the players, and what
    /// the policy must answer for them. One window answers runs, eviction
    /// and the admin API alike.
    struct Case {
        name: &'static str,
        policy: Policy,
        rate: Option<u64>,
        heads: Vec<Head>,
        /// The window's length in chunks.
        chunks: u64,
        /// Each player's window end.
        ends: Vec<u64>,
        /// Chunks wanted (within the grace), others not, up to chunk 120.
        wanted: Vec<u64>,
        /// Chunks eviction keeps.
        kept: Vec<u64>,
        /// The last chunk a download from the first wanted chunk after
        /// the first player's asks for, growing by 64 chunks.
        stretch_from: u64,
        stretch_last: u64,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "a probe that reads 64 KiB and leaves",
                policy: bytes(32 * MIB),
                rate: None,
                heads: vec![left(reader(0, 64 * KIB), Duration::from_millis(10))],
                chunks: 32,
                ends: vec![0],
                wanted: vec![0],
                kept: vec![],
                // Nobody reads on: one chunk at a time.
                stretch_from: 1,
                stretch_last: 1,
            },
            Case {
                name: "a paced player, window bounded by the time given",
                policy: timed(10, 256 * MIB),
                rate: Some(500 * KIB),
                heads: vec![reader(0, 20 * MIB)],
                // 10 s at 500 KiB/s: 5 chunks.
                chunks: 5,
                ends: vec![25],
                wanted: (20..=25).collect(),
                kept: (20..=25).collect(),
                // A request grows by up to a window's length from its own
                // first chunk.
                stretch_from: 21,
                stretch_last: 26,
            },
            Case {
                name: "a burst that earned more than the paced window allows",
                policy: timed(10, 256 * MIB),
                rate: Some(2 * MIB),
                // 20 s of media read at once: the window is what 10 s take.
                heads: vec![reader(0, 40 * MIB)],
                chunks: 20,
                ends: vec![60],
                wanted: (40..=60).collect(),
                kept: (40..=60).collect(),
                stretch_from: 41,
                stretch_last: 61,
            },
            Case {
                name: "a seek: a new player far in, nothing read yet",
                policy: bytes(32 * MIB),
                rate: None,
                heads: vec![reader(100 * MIB, 0)],
                chunks: 32,
                ends: vec![100],
                wanted: vec![100],
                kept: vec![100],
                stretch_from: 101,
                stretch_last: 101,
            },
            Case {
                name: "a player that hung up within the grace",
                policy: bytes(32 * MIB),
                rate: None,
                heads: vec![left(reader(0, 4 * MIB), Duration::from_secs(1))],
                chunks: 32,
                ends: vec![7],
                // Runs still fetch its window; eviction no longer keeps it;
                // a new request asks for nothing beyond the next chunk.
                wanted: (4..=7).collect(),
                kept: vec![],
                stretch_from: 5,
                stretch_last: 5,
            },
            Case {
                name: "a player that hung up past the grace",
                policy: bytes(32 * MIB),
                rate: None,
                heads: vec![left(reader(0, 4 * MIB), Duration::from_secs(4))],
                chunks: 32,
                ends: vec![7],
                wanted: vec![],
                kept: vec![],
                stretch_from: 5,
                stretch_last: 5,
            },
            Case {
                name: "two players on one media, each with its own window",
                policy: bytes(8 * MIB),
                rate: None,
                heads: vec![reader(0, 2 * MIB), reader(50 * MIB, 20 * MIB)],
                chunks: 8,
                // The first earned 3 chunks ahead of chunk 2 (2 MiB read,
                // less the first piece); the second the whole 8.
                ends: vec![3, 78],
                wanted: (2..=3).chain(70..=78).collect(),
                kept: (2..=3).chain(70..=78).collect(),
                // From chunk 3, only the first player counts: its window,
                // or as many chunks as it read (2).
                stretch_from: 3,
                stretch_last: 5,
            },
            Case {
                name: "a warm replay: 17.5 MiB read from the cache",
                policy: bytes(32 * MIB),
                rate: None,
                heads: vec![warm(0, 17 * MIB + 512 * KIB, 17 * MIB + 512 * KIB)],
                chunks: 32,
                // Cached bytes earn one chunk: the next one, no more.
                ends: vec![18],
                wanted: vec![17, 18],
                kept: vec![17, 18],
                stretch_from: 18,
                stretch_last: 19,
            },
            Case {
                name: "a warm player reading on from the origin",
                policy: bytes(32 * MIB),
                rate: None,
                // 17 MiB from the cache, then 3 MiB from the origin.
                heads: vec![warm(0, 20 * MIB, 17 * MIB)],
                chunks: 32,
                ends: vec![23],
                wanted: (20..=23).collect(),
                kept: (20..=23).collect(),
                // As many chunks as it earned (4).
                stretch_from: 21,
                stretch_last: 25,
            },
            Case {
                name: "a time given and the rate unknown: 32 MiB, within the limit",
                policy: timed(30, 16 * MIB),
                rate: None,
                heads: vec![reader(0, 64 * MIB)],
                chunks: 16,
                ends: vec![80],
                wanted: (64..=80).collect(),
                kept: (64..=80).collect(),
                stretch_from: 65,
                stretch_last: 81,
            },
        ]
    }

    #[test]
    fn the_policy_table() {
        for c in cases() {
            let w = c.policy.window(MIB, c.rate);
            assert_eq!(w.chunks(), c.chunks, "{}: window length", c.name);
            let ends: Vec<u64> = c.heads.iter().map(|h| w.end(h)).collect();
            assert_eq!(ends, c.ends, "{}: window ends", c.name);
            let heads = || c.heads.iter().copied();
            let wanted: Vec<u64> = (0..=120)
                .filter(|&i| w.wanted(heads(), i, c.policy.grace))
                .collect();
            assert_eq!(wanted, c.wanted, "{}: wanted", c.name);
            let kept: Vec<u64> = (0..=120).filter(|&i| w.keeps(heads(), i)).collect();
            assert_eq!(kept, c.kept, "{}: kept by eviction", c.name);
            assert_eq!(
                w.stretch_last(heads(), c.stretch_from, 64),
                c.stretch_last,
                "{}: a download's request",
                c.name
            );
        }
    }

    #[test]
    fn a_range_bounds_the_window() {
        let w = bytes(32 * MIB).window(MIB, None);
        let h = Head {
            limit: 6,
            ..reader(0, 5 * MIB)
        };
        assert_eq!(w.end(&h), 6);
        assert!(!w.wanted([h], 7, GRACE));
        assert_eq!(w.stretch_last([h], 6, 64), 6);
    }

    #[test]
    fn a_growing_run_asks_no_more_than_its_players_read() {
        let w = bytes(32 * MIB).window(MIB, None);
        // Read 3 MiB from the start: reach is chunk 5, at chunk 3.
        let h = reader(0, 3 * MIB);
        assert_eq!(w.stretch_last([h], 3, 1), 5);
        // Growing asks further: as many chunks as its players read, at
        // most a window's length.
        let long = reader(0, 24 * MIB);
        assert_eq!(w.stretch_last([long], 24, 1), 47);
        assert_eq!(w.stretch_last([long], 30, 64), 54);
        assert_eq!(w.stretch_last([reader(0, 64 * MIB)], 64, 64), 96);
    }

    #[test]
    fn approaching_and_reading_on() {
        let w = bytes(4 * MIB).window(MIB, None);
        let h = reader(0, 2 * MIB);
        assert!(w.approaching([h], 10), "two windows ahead");
        assert!(!w.approaching([h], 11));
        assert!(!w.approaching([left(h, Duration::ZERO)], 5));
        assert!(Window::reading_on([h], 2));
        assert!(!Window::reading_on([reader(0, 100 * KIB)], 0));
        assert!(Window::reading_at([h], 2) && !Window::reading_at([h], 3));
        assert!(!Window::reading_at([left(h, Duration::ZERO)], 2));
    }

    #[test]
    fn windows_follow_each_media_chunk_size() {
        let p = bytes(32 * MIB);
        assert_eq!(p.window(MIB, None).chunks(), 32);
        assert_eq!(p.window(256 * KIB, None).chunks(), 128);
        assert_eq!(bytes(0).window(MIB, None).chunks(), 0, "read-ahead off");
        // A time given: at least one chunk.
        assert_eq!(timed(1, 32 * MIB).window(MIB, Some(1)).chunks(), 1);
    }

    /// Each case: what the origin allows, one transfer's rate, playback's
    /// byte rate, whether a player waited at a transfer's front lately,
    /// and the streams the policy answers.
    #[test]
    fn streams_follow_what_players_need() {
        let mb = 1e6;
        let cases = [
            ("not measured yet", 4, None, Some(10_000_000), true, 1),
            ("one allowed", 1, Some(8.0 * mb), None, true, 1),
            ("a fast transfer", 4, Some(100.0 * mb), None, true, 1),
            (
                "a reader outruns a throttled transfer",
                4,
                Some(8.0 * mb),
                None,
                true,
                4,
            ),
            ("an origin lowered to two", 2, Some(8.0 * mb), None, true, 2),
            (
                "playback needs 1.5 x 10 MB/s of 8 MB/s",
                4,
                Some(8.0 * mb),
                Some(10_000_000),
                false,
                2,
            ),
            (
                "playback needs more than four bring",
                4,
                Some(2.0 * mb),
                Some(10_000_000),
                false,
                4,
            ),
            (
                "one suffices for playback",
                4,
                Some(8.0 * mb),
                Some(2_000_000),
                false,
                1,
            ),
            (
                "nobody waits, rate unknown",
                4,
                Some(8.0 * mb),
                None,
                false,
                1,
            ),
        ];
        for (name, max, rate, byte_rate, outrun, want) in cases {
            assert_eq!(streams(max, rate, byte_rate, outrun), want, "{name}");
        }
    }

    #[test]
    fn a_stride_shares_the_window() {
        let w = bytes(32 * MIB).window(MIB, None);
        assert_eq!(w.stride(1), 32);
        assert_eq!(w.stride(4), 8);
        assert_eq!(
            bytes(2 * MIB).window(MIB, None).stride(4),
            1,
            "at least a chunk"
        );
        // At least 1 MiB a stream.
        assert_eq!(w.max_streams(), 32);
        assert_eq!(bytes(256 * KIB).window(64 * KIB, None).max_streams(), 1);
        assert_eq!(bytes(4 * MIB).window(64 * KIB, None).max_streams(), 4);
    }
}
