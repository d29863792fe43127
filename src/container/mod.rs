//! Where a media file keeps its index, and how long it plays, from its
//! first bytes.
//!
//! A player opening an MP4 whose `moov` follows the media data, or a
//! Matroska/WebM file (its `Cues` at the end), reads the start, then jumps
//! to the index, then back: round trips before the first frame. Knowing
//! from the first bytes where the index lies lets spool fetch it at once,
//! beside the player's own first range. The container's duration gives the
//! average bitrate (`bytes_per_second`), so read-ahead can be counted in
//! seconds of media.
//!
//! Only what that needs is parsed: MP4's top-level box headers and
//! `moov/mvhd` (and `mvex/mehd`); Matroska's EBML header, the `Segment`
//! header, its top-level element headers up to the first `Cluster`, the
//! `SeekHead` entries and `Info`. Everything here is safe on arbitrary
//! bytes: checked arithmetic, bounded walks (`MAX_ELEMENTS`), bounded
//! answers (`MAX_INDEX_BYTES`, `MAX_STEPS`), and ranges always inside the
//! file.

use std::ops::Range;
use std::time::Duration;

mod mkv;
mod mp4;
#[cfg(test)]
mod tests;

use mkv::*;
use mp4::*;

/// At most this many bytes of index ranges in one answer; an index range
/// whose length is not known (the element after it is not in sight) is
/// taken up to the next known element or the end, and capped here too.
pub const MAX_INDEX_BYTES: u64 = 8 << 20;
/// The length `Layout::more` asks for when it needs a box or element header.
pub const MORE_BYTES: u64 = 4096;
/// How many follow-up reads (`resume`) one file may ask for, in all.
pub const MAX_STEPS: u8 = 3;
/// At most this many boxes or elements are walked at each level.
const MAX_ELEMENTS: usize = 1024;
/// At most this many `SeekHead` entries are used.
const MAX_SEEKS: usize = 64;
/// A `SeekHead` larger than this is not fetched by a follow-up read.
const MAX_SEEKHEAD: u64 = 64 << 10;
/// At most this many ranges in `Layout::index`.
const MAX_RANGES: usize = 8;

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
    scan: Scan,
}

/// What a walk has learnt, carried across follow-up reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Scan {
    kind: Option<Kind>,
    fragmented: bool,
    duration: Option<Duration>,
    /// Bytes the caller has given: never reported as index.
    held: Vec<Range<u64>>,
    steps: u8,
    /// MP4: a `moov` was seen (whole or reported), nothing more to find;
    /// index boxes found.
    moov_seen: bool,
    boxes: Vec<Range<u64>>,
    /// Matroska: the Segment's data, `SeekHead` targets (ID, absolute
    /// position), the extents of top-level elements seen, the first
    /// Cluster's position once the walk reached it.
    segment: Range<u64>,
    seeks: Vec<(u32, u64)>,
    seen: Vec<Range<u64>>,
    cluster: Option<u64>,
}

/// Reads a media file's layout from its first bytes. `head` is the start
/// of the file (any length; a few KiB is usually enough), `size` the
/// file's total size. Never panics; see `Layout` for what it answers.
pub fn sniff(head: &[u8], size: u64) -> Layout {
    let mut scan = Scan::default();
    scan.held.push(0..len(head));
    start(head, size, scan)
}

/// Continues `sniff` with the bytes read at `more.range.start` (fewer or
/// more than asked is fine). At most `MAX_STEPS` follow-ups are asked for.
pub fn resume(more: &More, bytes: &[u8], size: u64) -> Layout {
    let mut scan = more.scan.clone();
    let at = more.range.start;
    scan.held.push(at..at.saturating_add(len(bytes)));
    scan.steps = scan.steps.saturating_add(1);
    match scan.kind {
        Some(Kind::Mp4) => mp4_walk(at, bytes, at, size, scan),
        Some(Kind::Matroska) => mkv_walk(at, bytes, at, size, scan),
        Some(Kind::Unknown) | None if at == 0 => start(bytes, size, scan),
        Some(Kind::Unknown) | None => finish(Kind::Unknown, scan, size, None),
    }
}

/// The media's duration, from a buffer that starts at the file's start
/// (MP4 or Matroska), at an MP4 `moov` box, or at a Matroska top-level
/// element (an index range `sniff` reported, e.g. one holding `Info`).
/// MP4: `moov/mvhd` duration over its timescale (versions 0 and 1), or the
/// `mvex/mehd` fragment duration when `mvhd` has none. Matroska:
/// `Info/Duration` (4- or 8-byte float) times `TimestampScale` (default
/// 1 ms). None when absent, zero, unknown or absurd.
pub fn duration(bytes: &[u8]) -> Option<Duration> {
    if bytes.starts_with(&EBML_MAGIC) {
        let Head::Here(segment) = mkv_segment(bytes) else {
            return None;
        };
        return mkv_info_duration(bytes, segment.start);
    }
    if mp4_plausible(bytes) {
        return mp4_moov_duration(bytes);
    }
    match ebml_element(bytes) {
        Head::Here(e) if LEVEL1.contains(&e.id) => mkv_info_duration(bytes, 0),
        _ => None,
    }
}

/// The average bitrate in bytes per second of media; None for a zero
/// duration.
pub fn bytes_per_second(size: u64, duration: Duration) -> Option<u64> {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return None;
    }
    let rate = u128::from(size).checked_mul(1_000_000_000)? / nanos;
    Some(u64::try_from(rate).unwrap_or(u64::MAX))
}

fn len(b: &[u8]) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

/// The bytes of `b` (which starts at file offset `at`) from offset `pos`:
/// empty when `pos` lies beyond them, None before them.
fn from(b: &[u8], at: u64, pos: u64) -> Option<&[u8]> {
    let i = usize::try_from(pos.checked_sub(at)?).unwrap_or(usize::MAX);
    Some(b.get(i..).unwrap_or(&[]))
}

fn be(b: &[u8], n: usize) -> Option<u64> {
    let s = b.get(..n)?;
    Some(s.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

fn start(head: &[u8], size: u64, mut scan: Scan) -> Layout {
    if head.starts_with(&EBML_MAGIC) {
        return mkv_start(head, size, scan);
    }
    if mp4_plausible(head) {
        scan.kind = Some(Kind::Mp4);
        return mp4_walk(0, head, 0, size, scan);
    }
    // Too short to tell: ask for the start again, longer.
    let more = (head.len() < 16 && len(head) < size).then_some(0..size.min(MORE_BYTES));
    finish(Kind::Unknown, scan, size, more)
}

/// The answer: index ranges cleaned up, the follow-up if any is allowed.
fn finish(kind: Kind, scan: Scan, size: u64, more: Option<Range<u64>>) -> Layout {
    let mut raw: Vec<Range<u64>> = Vec::new();
    match kind {
        Kind::Mp4 => raw.clone_from(&scan.boxes),
        Kind::Matroska => raw = mkv_ranges(&scan, size),
        Kind::Unknown => {}
    }
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
fn tidy(raw: Vec<Range<u64>>, held: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
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
enum Head<T> {
    Here(T),
    /// Its bytes are not (all) in the buffer.
    Beyond,
    /// Not a valid header: stop walking.
    Bad,
}
