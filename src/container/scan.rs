//! What the walkers share: the answer's types, what a walk carries
//! across follow-up reads, the index budget, and byte helpers.

use std::ops::Range;
use std::time::Duration;

/// At most this many bytes of index ranges in one answer; an index range
/// whose length is not known (the element after it is not in sight) is
/// taken up to the next known element or the end, and capped here too.
pub const MAX_INDEX_BYTES: u64 = 8 << 20;
/// The length `Layout::more` asks for when it needs a box or element header.
pub const MORE_BYTES: u64 = 4096;
/// How many follow-up reads (`resume`) one file may ask for, in all.
pub const MAX_STEPS: u8 = 3;
/// At most this many boxes or elements are walked at each level.
pub(super) const MAX_ELEMENTS: usize = 1024;
/// At most this many `SeekHead` entries are used.
pub(super) const MAX_SEEKS: usize = 64;
/// A `SeekHead` larger than this is not fetched by a follow-up read.
pub(super) const MAX_SEEKHEAD: u64 = 64 << 10;
/// At most this many ranges in `Layout::index`.
pub(super) const MAX_RANGES: usize = 8;

/// The container format, as far as the first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ISO base media (MP4, M4A, MOV): a sequence of boxes.
    Mp4,
    /// Matroska or WebM (the same EBML layout).
    Matroska,
    /// Neither, or too few bytes to tell (then `more` asks for the start).
    Unknown,
}

/// What `sniff` (or `resume`) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub kind: Kind,
    /// An MP4 made of fragments (`moof`, or `mvex` in the `moov`). Its index
    /// (`moov`, any `sidx`) is at the front; the `mfra` at the end is not
    /// reported, as players read it only when asked to.
    pub fragmented: bool,
    /// Byte ranges of the index a player reads at start-up that lie beyond
    /// the bytes given so far: sorted, disjoint, non-empty, inside
    /// `[0, size)`, at most `MAX_INDEX_BYTES` in all. MP4: the `moov`
    /// (after an `mdat` its length is not in sight: up to the end of the
    /// file), or a `sidx` cut by the head. Matroska: each top-level element
    /// the `SeekHead` lists (`Cues`, `Tags`, `Chapters`, `Attachments`,
    /// `Tracks`, `Info`, another `SeekHead`; never a `Cluster`), from its
    /// listed position up to its end when its header is in sight; else,
    /// after the first Cluster, to the next listed or seen element, the
    /// Segment's end or the file's end; before the first Cluster (media may
    /// follow it) its first `MORE_BYTES`.
    pub index: Vec<Range<u64>>,
    /// The head was too short to decide: read `more.range` and pass the
    /// bytes to `resume`. `index` may already hold ranges known so far.
    pub more: Option<More>,
    /// The duration, when the bytes given so far held it (see `duration`).
    pub duration: Option<Duration>,
}

/// A follow-up read the caller should make, and what was learnt so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct More {
    /// Non-empty, inside `[0, size)`; usually `MORE_BYTES` long.
    pub range: Range<u64>,
    pub(super) scan: Scan,
}

/// What a walk has learnt, carried across follow-up reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Scan {
    pub(super) kind: Option<Kind>,
    pub(super) fragmented: bool,
    pub(super) duration: Option<Duration>,
    /// Bytes the caller has given: never reported as index.
    pub(super) held: Vec<Range<u64>>,
    pub(super) steps: u8,
    /// MP4: a `moov` was seen (whole or reported), nothing more to find;
    /// index boxes found.
    pub(super) moov_seen: bool,
    pub(super) boxes: Vec<Range<u64>>,
    /// Matroska: the Segment's data, `SeekHead` targets (ID, absolute
    /// position), the extents of top-level elements seen, the first
    /// Cluster's position once the walk reached it.
    pub(super) segment: Range<u64>,
    pub(super) seeks: Vec<(u32, u64)>,
    pub(super) seen: Vec<Range<u64>>,
    pub(super) cluster: Option<u64>,
}

pub(super) fn len(b: &[u8]) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

/// The bytes of `b` (which starts at file offset `at`) from offset `pos`:
/// empty when `pos` lies beyond them, None before them.
pub(super) fn from(b: &[u8], at: u64, pos: u64) -> Option<&[u8]> {
    let i = usize::try_from(pos.checked_sub(at)?).unwrap_or(usize::MAX);
    Some(b.get(i..).unwrap_or(&[]))
}

pub(super) fn be(b: &[u8], n: usize) -> Option<u64> {
    let s = b.get(..n)?;
    Some(s.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

/// The answer: the index ranges a walk found (`raw`, most wanted first)
/// cleaned up, the follow-up if any is allowed.
pub(super) fn finish(
    kind: Kind,
    raw: Vec<Range<u64>>,
    scan: Scan,
    size: u64,
    more: Option<Range<u64>>,
) -> Layout {
    let index = tidy(raw, &scan.held, size);
    let more = more
        .map(|r| r.start..r.end.min(size))
        .filter(|r| r.start < r.end && scan.steps < MAX_STEPS)
        .map(|range| More {
            range,
            scan: scan.clone(),
        });
    Layout {
        kind,
        fragmented: scan.fragmented,
        index,
        more,
        duration: scan.duration,
    }
}

/// Clips to the file, drops what the caller holds, keeps what fits in
/// `MAX_INDEX_BYTES` in the order given (most wanted first), sorts, merges.
pub(super) fn tidy(raw: Vec<Range<u64>>, held: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut pieces: Vec<Range<u64>> = raw
        .into_iter()
        .map(|r| r.start..r.end.min(size).min(r.start.saturating_add(MAX_INDEX_BYTES)))
        .filter(|r| r.start < r.end)
        .collect();
    for h in held {
        pieces = pieces
            .into_iter()
            .flat_map(|r| [r.start..r.end.min(h.start), r.start.max(h.end)..r.end])
            .filter(|r| r.start < r.end)
            .collect();
    }
    let mut budget = MAX_INDEX_BYTES;
    let mut capped = Vec::new();
    for r in pieces {
        let end = r.end.min(r.start.saturating_add(budget));
        if r.start < end {
            budget -= end - r.start;
            capped.push(r.start..end);
        }
    }
    capped.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in capped {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out.truncate(MAX_RANGES);
    out
}

/// A header read from bytes that may end early.
pub(super) enum Head<T> {
    Here(T),
    /// Its bytes are not (all) in the buffer.
    Beyond,
    /// Not a valid header: stop walking.
    Bad,
}
