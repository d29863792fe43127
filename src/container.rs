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

// ---- MP4 ----------------------------------------------------------------

/// Box types that may open an MP4 or QuickTime file.
const MP4_FIRST: [&[u8; 4]; 8] = [
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin",
];

struct BoxHeader {
    kind: [u8; 4],
    /// Header length: 8, or 16 with a 64-bit size.
    header: u64,
    /// Absolute end; may lie beyond the file in a hostile or cut file.
    end: u64,
}

/// The box header at file offset `pos` of `b` (which starts at `at`).
/// `size` is the file's size (a box of size 0 runs to it).
fn mp4_box(b: &[u8], at: u64, pos: u64, size: u64) -> Head<BoxHeader> {
    let Some(s) = from(b, at, pos) else {
        return Head::Bad;
    };
    let (Some(size32), Some(kind)) = (be(s, 4), s.get(4..8)) else {
        return Head::Beyond;
    };
    let kind = [kind[0], kind[1], kind[2], kind[3]];
    let (header, box_size) = match size32 {
        1 => match s.get(8..).and_then(|x| be(x, 8)) {
            Some(large) => (16, large),
            None => return Head::Beyond,
        },
        0 => (8, size.saturating_sub(pos)),
        n => (8, n),
    };
    match pos.checked_add(box_size) {
        Some(end) if box_size >= header => Head::Here(BoxHeader { kind, header, end }),
        _ => Head::Bad,
    }
}

fn mp4_plausible(b: &[u8]) -> bool {
    match mp4_box(b, 0, 0, len(b)) {
        Head::Here(h) => MP4_FIRST.contains(&&h.kind),
        Head::Beyond | Head::Bad => false,
    }
}

/// Walks top-level boxes from `pos` through `b` (at file offset `at`).
fn mp4_walk(at: u64, b: &[u8], mut pos: u64, size: u64, mut scan: Scan) -> Layout {
    scan.kind = Some(Kind::Mp4);
    let bytes_end = at.saturating_add(len(b));
    let mut after_mdat = false;
    let mut more = None;
    for _ in 0..MAX_ELEMENTS {
        if pos >= size {
            break;
        }
        let h = match mp4_box(b, at, pos, size) {
            Head::Here(h) => h,
            Head::Bad => break,
            // The index was seen: nothing more to find.
            Head::Beyond if scan.moov_seen => break,
            // The media data's header said where it ends; what follows is
            // the index (its length not in sight).
            Head::Beyond if after_mdat => {
                scan.moov_seen = true;
                scan.boxes.push(pos..size);
                break;
            }
            Head::Beyond => {
                more = Some(pos..pos.saturating_add(MORE_BYTES));
                break;
            }
        };
        after_mdat = &h.kind == b"mdat";
        match &h.kind {
            b"moov" => {
                scan.moov_seen = true;
                let body = from(b, at, pos.saturating_add(h.header)).unwrap_or(&[]);
                let room = usize::try_from(h.end - pos - h.header).unwrap_or(usize::MAX);
                let (duration, fragmented) = mp4_moov(&body[..body.len().min(room)]);
                scan.duration = scan.duration.or(duration);
                scan.fragmented |= fragmented;
                if h.end > bytes_end {
                    scan.boxes.push(pos..h.end);
                }
            }
            b"sidx" if h.end > bytes_end => scan.boxes.push(pos..h.end),
            // Fragments follow: their index was at the front.
            b"moof" => {
                scan.fragmented = true;
                break;
            }
            _ => {}
        }
        pos = h.end;
    }
    finish(Kind::Mp4, scan, size, more)
}

/// The boxes in `b` (the last one's body cut to what is there).
fn mp4_children(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let end = len(b);
    while out.len() < MAX_ELEMENTS && pos < end {
        let Head::Here(h) = mp4_box(b, 0, pos, end) else {
            break;
        };
        let (body_start, body_end) = (pos + h.header, h.end.min(end));
        let body = usize::try_from(body_start)
            .ok()
            .zip(usize::try_from(body_end).ok())
            .and_then(|(s, e)| b.get(s..e))
            .unwrap_or(&[]);
        out.push((h.kind, body));
        pos = h.end;
    }
    out
}

/// The duration (`mvhd`, else `mvex/mehd`) and whether `mvex` says
/// fragments follow, from a `moov` box's body.
fn mp4_moov(body: &[u8]) -> (Option<Duration>, bool) {
    let children = mp4_children(body);
    let mvhd = children.iter().find(|(k, _)| k == b"mvhd");
    let Some((timescale, whole)) = mvhd.and_then(|(_, b)| match b.first()? {
        1 => Some((be(b.get(20..)?, 4)?, be(b.get(24..)?, 8)?)),
        _ => Some((be(b.get(12..)?, 4)?, be(b.get(16..)?, 4)?)),
    }) else {
        return (None, children.iter().any(|(k, _)| k == b"mvex"));
    };
    let unknown = [0, u64::from(u32::MAX), u64::MAX];
    let mut units = (!unknown.contains(&whole)).then_some(whole);
    let mut fragmented = false;
    for (_, mvex) in children.iter().filter(|(k, _)| k == b"mvex") {
        fragmented = true;
        for (_, mehd) in mp4_children(mvex).iter().filter(|(k, _)| k == b"mehd") {
            let d = match mehd.first() {
                Some(1) => mehd.get(4..).and_then(|x| be(x, 8)),
                _ => mehd.get(4..).and_then(|x| be(x, 4)),
            };
            units = units.or(d.filter(|d| !unknown.contains(d)));
        }
    }
    let duration = units.filter(|_| timescale > 0).and_then(|u| {
        let nanos = u128::from(u % timescale) * 1_000_000_000 / u128::from(timescale);
        Some(Duration::new(u / timescale, u32::try_from(nanos).ok()?))
    });
    (duration, fragmented)
}

/// The duration from a buffer of top-level boxes holding a `moov`.
fn mp4_moov_duration(b: &[u8]) -> Option<Duration> {
    let (_, moov) = mp4_children(b).into_iter().find(|(k, _)| k == b"moov")?;
    mp4_moov(moov).0
}

// ---- Matroska -----------------------------------------------------------

const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEKHEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;
const VOID: u32 = 0xEC;
const CRC32: u32 = 0xBF;
/// The top-level elements of a Segment.
const LEVEL1: [u32; 8] = [
    SEEKHEAD,
    INFO,
    0x1654_AE6B, // Tracks
    CUES,
    CLUSTER,
    0x1254_C367, // Tags
    0x1043_A770, // Chapters
    0x1941_A469, // Attachments
];

struct Element {
    id: u32,
    /// Header length (ID and size).
    header: u64,
    /// None: unknown size (runs to its parent's end).
    size: Option<u64>,
}

/// The element header at the start of `s`: an ID of 1 to 4 bytes, a size
/// of 1 to 8 (all ones: unknown).
fn ebml_element(s: &[u8]) -> Head<Element> {
    let width = |b: u8| (b != 0).then(|| b.leading_zeros() as usize + 1);
    let Some(&first) = s.first() else {
        return Head::Beyond;
    };
    let Some(n) = width(first).filter(|&n| n <= 4) else {
        return Head::Bad;
    };
    let Some(&size_first) = s.get(n) else {
        return Head::Beyond;
    };
    let Some(m) = width(size_first) else {
        return Head::Bad;
    };
    let (Some(id), Some(raw)) = (be(s, n), s.get(n..).and_then(|x| be(x, m))) else {
        return Head::Beyond;
    };
    let mask = (1u64 << (7 * m)) - 1;
    let value = raw & mask;
    Head::Here(Element {
        id: u32::try_from(id).unwrap_or(0),
        header: (n + m) as u64,
        size: (value != mask).then_some(value),
    })
}

/// The first bytes of a file hold a Matroska EBML header and a Segment
/// header: the Segment's data (its end u64::MAX when unknown).
fn mkv_segment(b: &[u8]) -> Head<Range<u64>> {
    let mut pos = 0u64;
    for i in 0..8 {
        let Some(s) = from(b, 0, pos) else {
            return Head::Beyond;
        };
        let e = match ebml_element(s) {
            Head::Here(e) => e,
            Head::Beyond => return Head::Beyond,
            Head::Bad => return Head::Bad,
        };
        let Some(data) = pos.checked_add(e.header) else {
            return Head::Bad;
        };
        match (i, e.id, e.size) {
            (_, SEGMENT, size) if i > 0 => {
                let end = size.and_then(|s| data.checked_add(s)).unwrap_or(u64::MAX);
                return Head::Here(data..end);
            }
            (0, EBML, Some(size)) | (1.., VOID | CRC32, Some(size)) => {
                let Some(next) = data.checked_add(size) else {
                    return Head::Bad;
                };
                pos = next;
            }
            _ => return Head::Bad,
        }
    }
    Head::Bad
}

fn mkv_start(head: &[u8], size: u64, mut scan: Scan) -> Layout {
    match mkv_segment(head) {
        Head::Here(segment) => {
            scan.kind = Some(Kind::Matroska);
            scan.segment = segment.start..segment.end.min(size);
            mkv_walk(0, head, segment.start, size, scan)
        }
        Head::Beyond if len(head) < MORE_BYTES => {
            finish(Kind::Matroska, scan, size, Some(0..MORE_BYTES))
        }
        Head::Beyond | Head::Bad => finish(Kind::Matroska, scan, size, None),
    }
}

/// Walks the Segment's top-level elements from `pos` through `b` (at file
/// offset `at`), up to the first Cluster.
fn mkv_walk(at: u64, b: &[u8], mut pos: u64, size: u64, mut scan: Scan) -> Layout {
    let end = scan.segment.end.min(size);
    let mut more = None;
    for _ in 0..MAX_ELEMENTS {
        if pos >= end {
            break;
        }
        let Some(s) = from(b, at, pos) else {
            break;
        };
        let e = match ebml_element(s) {
            Head::Here(e) => e,
            Head::Bad => break,
            Head::Beyond => {
                // Before the Clusters, listed elements' extents are seen
                // by walking on to them.
                let ahead = scan.seeks.iter().any(|&(id, t)| id != CLUSTER && t >= pos);
                if scan.seeks.is_empty() || ahead {
                    more = Some(pos..pos.saturating_add(MORE_BYTES));
                }
                break;
            }
        };
        if e.id == CLUSTER {
            scan.cluster = Some(pos);
            break;
        }
        let Some(data) = pos.checked_add(e.header) else {
            break;
        };
        // Unknown size (outside Clusters): nothing more can be walked.
        let Some(el_end) = e.size.and_then(|n| data.checked_add(n)) else {
            break;
        };
        if scan.seen.len() < MAX_ELEMENTS {
            scan.seen.push(pos..el_end);
        }
        let body = from(b, at, data).and_then(|x| {
            let n = usize::try_from(el_end - data).ok()?;
            x.get(..n)
        });
        match (e.id, body) {
            (SEEKHEAD, Some(body)) => mkv_seekhead(body, &mut scan),
            // Cut by the bytes given: read it whole, if small.
            (SEEKHEAD, None) if scan.seeks.is_empty() && el_end - pos <= MAX_SEEKHEAD => {
                more = Some(pos..el_end);
                break;
            }
            (INFO, Some(body)) => scan.duration = scan.duration.or(mkv_info(body)),
            _ => {}
        }
        pos = el_end;
    }
    finish(Kind::Matroska, scan, size, more)
}

/// The child elements in `b` (the last one's body cut to what is there).
fn ebml_children(b: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while out.len() < MAX_ELEMENTS {
        let Some(s) = b.get(pos..).filter(|s| !s.is_empty()) else {
            break;
        };
        let Head::Here(e) = ebml_element(s) else {
            break;
        };
        let data = pos + e.header as usize;
        let end = e
            .size
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| data.checked_add(n))
            .unwrap_or(usize::MAX);
        out.push((e.id, b.get(data..end.min(b.len())).unwrap_or(&[])));
        if e.size.is_none() {
            break;
        }
        pos = end;
    }
    out
}

fn mkv_seekhead(body: &[u8], scan: &mut Scan) {
    for (_, seek) in ebml_children(body).iter().filter(|(id, _)| *id == SEEK) {
        let (mut id, mut position) = (None, None);
        for (child, value) in ebml_children(seek) {
            match child {
                SEEK_ID if value.len() <= 4 => id = be(value, value.len()),
                SEEK_POSITION if value.len() <= 8 => position = be(value, value.len()),
                _ => {}
            }
        }
        let target = position.and_then(|p| scan.segment.start.checked_add(p));
        if let (Some(id), Some(t)) = (id, target) {
            if scan.seeks.len() < MAX_SEEKS && t < scan.segment.end {
                scan.seeks.push((u32::try_from(id).unwrap_or(0), t));
            }
        }
    }
}

/// The duration an `Info` element's body gives.
fn mkv_info(body: &[u8]) -> Option<Duration> {
    let mut scale = 1_000_000u64;
    let mut duration = None;
    for (id, value) in ebml_children(body) {
        match (id, value.len()) {
            (TIMESTAMP_SCALE, 1..=8) => scale = be(value, value.len())?,
            (DURATION, 4) => duration = Some(f64::from(f32::from_be_bytes(value.try_into().ok()?))),
            (DURATION, 8) => duration = Some(f64::from_be_bytes(value.try_into().ok()?)),
            _ => {}
        }
    }
    let secs = duration? * scale as f64 / 1e9;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
}

/// The duration from the top-level elements in `b` from index `pos`.
fn mkv_info_duration(b: &[u8], pos: u64) -> Option<Duration> {
    let rest = b.get(usize::try_from(pos).ok()?..)?;
    let info = ebml_children(rest)
        .into_iter()
        .take_while(|(id, _)| *id != CLUSTER)
        .find(|(id, _)| *id == INFO)?;
    mkv_info(info.1)
}

/// Each element the SeekHead lists (Clusters aside): to its end when seen;
/// after the first Cluster, to the next element known to start after it;
/// before the Clusters (the walk stopped short of them) only its first
/// `MORE_BYTES`, as media may follow it. The Cues come first: they are
/// what seeking needs, so they are the last to be cut by the budget.
fn mkv_ranges(scan: &Scan, size: u64) -> Vec<Range<u64>> {
    let bound = scan.segment.end.min(size);
    let starts = || {
        let seeks = scan.seeks.iter().map(|s| s.1);
        seeks.chain(scan.seen.iter().map(|r| r.start))
    };
    let mut seeks: Vec<(u32, u64)> = scan.seeks.clone();
    seeks.sort_by_key(|&(id, t)| (id != CUES, t));
    seeks
        .into_iter()
        .filter(|(id, _)| *id != CLUSTER)
        .map(|(_, t)| {
            let end = match scan.seen.iter().find(|r| r.start == t) {
                Some(r) => r.end.min(bound),
                None if scan.cluster.is_some_and(|c| c < t) => {
                    starts().filter(|&s| s > t).fold(bound, u64::min)
                }
                None => t.saturating_add(MORE_BYTES).min(bound),
            };
            t..end
        })
        .collect()
}

#[cfg(test)]
mod tests {
    // A single index range is the expected answer in most tests.
    #![allow(clippy::single_range_in_vec_init)]

    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Where `pattern` last occurs: found by a plain byte search, not by
    /// the parser under test.
    fn rfind(file: &[u8], pattern: &[u8]) -> u64 {
        let i = file.windows(pattern.len()).rposition(|w| w == pattern);
        i.expect("pattern in fixture") as u64
    }

    /// The `moov` box, found by searching for its type: (start, end).
    fn moov(file: &[u8]) -> (u64, u64) {
        let start = rfind(file, b"moov") - 4;
        let i = start as usize;
        let size = u32::from_be_bytes(file[i..i + 4].try_into().unwrap());
        (start, start + u64::from(size))
    }

    fn about_two_seconds(d: Option<Duration>) -> bool {
        // Within one frame at 25 frames a second.
        d.is_some_and(|d| d.abs_diff(Duration::from_secs(2)) <= Duration::from_millis(40))
    }

    /// What every answer must keep, whatever the input.
    fn assert_sane(l: &Layout, head: usize, size: u64) {
        let mut total = 0;
        for (i, r) in l.index.iter().enumerate() {
            assert!(r.start < r.end && r.end <= size, "{r:?} outside 0..{size}");
            assert!(r.start >= head as u64, "{r:?} overlaps the head 0..{head}");
            if let Some(next) = l.index.get(i + 1) {
                assert!(r.end < next.start, "{r:?} and {next:?} not sorted apart");
            }
            total += r.end - r.start;
        }
        assert!(total <= MAX_INDEX_BYTES && l.index.len() <= MAX_RANGES);
        if let Some(m) = &l.more {
            assert!(
                m.range.start < m.range.end && m.range.end <= size,
                "{:?}",
                m.range
            );
            assert!(m.scan.steps < MAX_STEPS);
        }
    }

    #[test]
    fn mp4_with_moov_at_the_end() {
        let file = fixture("tail.mp4");
        let size = file.len() as u64;
        let (start, end) = moov(&file);
        assert_eq!(end, size, "the fixture ends with its moov");
        assert!(start > 16 << 10, "the moov lies beyond the heads tried");
        // The mdat header is in each head: its size tells where moov is.
        for head in [64, 4096, 16 << 10] {
            let l = sniff(&file[..head], size);
            assert_sane(&l, head, size);
            assert_eq!(l.kind, Kind::Mp4);
            assert_eq!(l.index, vec![start..size], "head {head}");
            assert!(l.more.is_none() && !l.fragmented && l.duration.is_none());
        }
        // The index region alone gives the duration.
        assert!(about_two_seconds(duration(&file[start as usize..])));
        // With the whole file in hand there is nothing left to fetch.
        let l = sniff(&file, size);
        assert!(l.index.is_empty() && l.more.is_none());
        assert!(about_two_seconds(l.duration));
        assert!(about_two_seconds(duration(&file)));
    }

    #[test]
    fn mp4_with_moov_first() {
        let file = fixture("faststart.mp4");
        let size = file.len() as u64;
        let (start, end) = moov(&file);
        assert!(start < 64 && end > 1024 && end < 4096);
        let l = sniff(&file[..4096], size);
        assert_sane(&l, 4096, size);
        assert_eq!(
            (l.kind, l.index.is_empty(), l.more),
            (Kind::Mp4, true, None)
        );
        assert!(about_two_seconds(l.duration));
        // A head that cuts the moov: the rest of it is the index.
        let l = sniff(&file[..1024], size);
        assert_eq!(l.index, vec![1024..end]);
        assert!(
            about_two_seconds(l.duration),
            "mvhd comes first in the moov"
        );
    }

    #[test]
    fn fragmented_mp4_keeps_its_index_in_front() {
        let file = fixture("fragmented.mp4");
        let size = file.len() as u64;
        assert!(
            rfind(&file, b"mfra") > 4096,
            "an mfra at the end, not reported"
        );
        let l = sniff(&file[..4096], size);
        assert_sane(&l, 4096, size);
        assert_eq!(l.kind, Kind::Mp4);
        assert!(l.fragmented && l.index.is_empty() && l.more.is_none());
        // An empty moov does not know the duration.
        assert_eq!(l.duration, None);
    }

    #[test]
    fn matroska_and_webm_cues_at_the_end() {
        for name in ["video.mkv", "video.webm"] {
            let file = fixture(name);
            let size = file.len() as u64;
            let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
            assert!(
                cues > 16 << 10,
                "{name}: the Cues lie beyond the heads tried"
            );
            for head in [1024, 4096, 16 << 10] {
                let l = sniff(&file[..head], size);
                assert_sane(&l, head, size);
                assert_eq!(l.kind, Kind::Matroska, "{name}");
                // The Cues are last: listed position to the end.
                assert_eq!(l.index, vec![cues..size], "{name}, head {head}");
                assert!(l.more.is_none() && !l.fragmented);
                assert!(about_two_seconds(l.duration), "{name}: {:?}", l.duration);
            }
            assert!(about_two_seconds(duration(&file)), "{name}");
            let l = sniff(&file, size);
            assert!(l.index.is_empty() && l.more.is_none(), "{name}");
        }
    }

    #[test]
    fn a_head_too_short_asks_for_more() {
        // MP4: the ftyp is cut, so where the mdat starts is unknown.
        let file = fixture("tail.mp4");
        let size = file.len() as u64;
        let (start, _) = moov(&file);
        let l = sniff(&file[..20], size);
        assert_eq!((l.kind, l.index.is_empty()), (Kind::Mp4, true));
        let more = l.more.expect("a follow-up read");
        assert_eq!(more.range, 32..32 + MORE_BYTES);
        let r = more.range.start as usize..more.range.end as usize;
        let l = resume(&more, &file[r], size);
        assert_eq!(l.index, [start..size]);
        assert_eq!(l.more, None);

        // Matroska: the EBML header is cut.
        let file = fixture("video.webm");
        let size = file.len() as u64;
        let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
        let l = sniff(&file[..30], size);
        assert_eq!(l.kind, Kind::Matroska);
        let more = l.more.expect("a follow-up read");
        assert_eq!(more.range, 0..MORE_BYTES);
        let l = resume(&more, &file[..MORE_BYTES as usize], size);
        assert_eq!(l.index, [cues..size]);
        assert_eq!(l.more, None);
        assert!(about_two_seconds(l.duration));

        // Matroska: the SeekHead is cut; then the elements it lists
        // before the Clusters are beyond the head.
        let file = fixture("video.mkv");
        let size = file.len() as u64;
        let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
        let seekhead = rfind(&file[..100], &[0x11, 0x4D, 0x9B, 0x74]);
        let l = sniff(&file[..80], size);
        let more = l.more.expect("the rest of the SeekHead");
        assert_eq!(more.range.start, seekhead);
        assert!(more.range.end > 80 && more.range.end < 200);
        let r = more.range.start as usize..more.range.end as usize;
        let l = resume(&more, &file[r.clone()], size);
        assert_sane(&l, r.end, size);
        let more = l.more.expect("a walk on to the first Cluster");
        assert_eq!(more.range.start, r.end as u64);
        let r = more.range.start as usize..more.range.end as usize;
        let l = resume(&more, &file[r], size);
        assert_eq!(l.index, [cues..size]);
        assert_eq!(l.more, None);
        assert!(about_two_seconds(l.duration));

        // Nothing yet, or too little to tell.
        let l = sniff(&[], size);
        assert_eq!(l.kind, Kind::Unknown);
        assert_eq!(l.more.map(|m| m.range), Some(0..MORE_BYTES));
        assert_eq!(sniff(b"plain text, not media", size).more, None);
    }

    /// An MP4 box header.
    fn mp4box(kind: &[u8; 4], size: u32) -> Vec<u8> {
        [&size.to_be_bytes()[..], kind].concat()
    }

    #[test]
    fn mp4_box_sizes_64_bit_and_to_the_end() {
        let ftyp = [mp4box(b"ftyp", 16), vec![0; 8]].concat();
        // A 64-bit mdat size: the moov starts right after 5 GB of media.
        let mdat = [mp4box(b"mdat", 1), 5_000_000_016u64.to_be_bytes().to_vec()].concat();
        let head = [ftyp.clone(), mdat, vec![0; 100]].concat();
        let moov = 16 + 5_000_000_016;
        let l = sniff(&head, moov + 3000);
        assert_eq!(l.index, vec![moov..moov + 3000]);
        // A moov far larger than MAX_INDEX_BYTES is fetched only so far.
        let l = sniff(&head, moov + (1 << 40));
        assert_eq!(l.index, vec![moov..moov + MAX_INDEX_BYTES]);
        // An mdat of size 0 runs to the end: no moov after it.
        let head = [ftyp.clone(), mp4box(b"mdat", 0), vec![0; 100]].concat();
        let l = sniff(&head, 1 << 30);
        assert_eq!((l.kind, l.index, l.more), (Kind::Mp4, vec![], None));
        // A large box other than mdat: what follows it must be looked at.
        let head = [ftyp, mp4box(b"free", 100_000), vec![0; 100]].concat();
        let l = sniff(&head, 1 << 30);
        assert!(l.index.is_empty());
        assert_eq!(l.more.map(|m| m.range), Some(100_016..100_016 + MORE_BYTES));
        // A box claiming fewer bytes than its own header ends the walk.
        let l = sniff(&[mp4box(b"ftyp", 4), vec![0; 100]].concat(), 1 << 30);
        assert_eq!((l.kind, l.index, l.more), (Kind::Unknown, vec![], None));
    }

    #[test]
    fn mvhd_versions_and_timescale() {
        let mvhd = |version: u8, body: &[u8]| {
            let full = [&[version, 0, 0, 0][..], body].concat();
            let b = [mp4box(b"mvhd", 8 + full.len() as u32), full].concat();
            [mp4box(b"moov", 8 + b.len() as u32), b].concat()
        };
        // Version 0: 90 s at 1000 units a second.
        let v0 = [
            [0u8; 8].as_slice(),
            &1000u32.to_be_bytes(),
            &90_000u32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(duration(&mvhd(0, &v0)), Some(Duration::from_secs(90)));
        // Version 1: 64-bit times, 2.5 s at 48 kHz.
        let v1 = [
            [0u8; 16].as_slice(),
            &48_000u32.to_be_bytes(),
            &120_000u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(duration(&mvhd(1, &v1)), Some(Duration::from_millis(2500)));
        // A zero timescale, an unknown (all ones) or cut duration: none.
        let zero = [
            [0u8; 8].as_slice(),
            &0u32.to_be_bytes(),
            &9u32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(duration(&mvhd(0, &zero)), None);
        let unknown = [[0u8; 8].as_slice(), &1000u32.to_be_bytes(), &[0xFF; 4]].concat();
        assert_eq!(duration(&mvhd(0, &unknown)), None);
        assert_eq!(duration(&mvhd(1, &v1[..20])), None);
    }

    #[test]
    fn matroska_info_duration_and_scale() {
        // Info { TimestampScale 1000 (µs), Duration 2500000.0 as f32 }.
        let mut info = vec![0x2A, 0xD7, 0xB1, 0x82, 0x03, 0xE8, 0x44, 0x89, 0x84];
        info.extend(2_500_000f32.to_be_bytes());
        let element = [
            &[0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8][..],
            &info,
        ]
        .concat();
        assert_eq!(duration(&element), Some(Duration::from_millis(2500)));
        // Without a scale, the default 1 ms; an 8-byte float.
        let mut info = vec![0x44, 0x89, 0x88];
        info.extend(1500f64.to_be_bytes());
        let element = [
            &[0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8][..],
            &info,
        ]
        .concat();
        assert_eq!(duration(&element), Some(Duration::from_millis(1500)));
        // NaN, negative: none.
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let mut info = vec![0x44, 0x89, 0x88];
            info.extend(bad.to_be_bytes());
            let element = [&[0x15, 0x49, 0xA9, 0x66, 0x8B][..], &info].concat();
            assert_eq!(duration(&element), None);
        }
    }

    /// A Matroska element with an 8-byte size.
    fn element(id: &[u8], body: &[u8]) -> Vec<u8> {
        let size = (body.len() as u64 | 1 << 56).to_be_bytes();
        [id, &size, body].concat()
    }

    #[test]
    fn matroska_seekhead_targets() {
        let seek = |id: &[u8], pos: u64| {
            let body = [
                element(&[0x53, 0xAB], id),
                element(&[0x53, 0xAC], &pos.to_be_bytes()),
            ];
            element(&[0x4D, 0xBB], &body.concat())
        };
        let seekhead = [
            seek(&[0x1C, 0x53, 0xBB, 0x6B], 100_000),    // Cues
            seek(&[0x1F, 0x43, 0xB6, 0x75], 50_000),     // a Cluster: not index
            seek(&[0x12, 0x54, 0xC3, 0x67], 100_500),    // Tags
            seek(&[0x10, 0x43, 0xA7, 0x70], 10_000_000), // beyond the Segment
        ]
        .concat();
        let info = [
            element(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]),
            element(&[0x44, 0x89], &60_000f64.to_be_bytes()),
        ]
        .concat();
        let head = [
            element(&EBML_MAGIC, &element(&[0x42, 0x82], b"webm")),
            [0x18, 0x53, 0x80, 0x67, 0x01, 0, 0, 0, 0, 0x03, 0x0D, 0x40].to_vec(), // 200_000
            element(&[0x11, 0x4D, 0x9B, 0x74], &seekhead),
            element(&[0x15, 0x49, 0xA9, 0x66], &info),
            [0x1F, 0x43, 0xB6, 0x75, 0x01, 0, 0, 0, 0, 0, 0xBF, 0x68].to_vec(), // 49_000
        ]
        .concat();
        let segment = rfind(&head, &[0x18, 0x53, 0x80, 0x67]) + 12;
        // The file runs on past the Segment's end.
        let size = segment + 200_000 + 5000;
        let l = sniff(&head, size);
        assert_sane(&l, head.len(), size);
        // Cues up to the Tags listed after them, Tags up to the Segment's end.
        assert_eq!(l.index, vec![segment + 100_000..segment + 200_000]);
        assert_eq!(l.duration, Some(Duration::from_secs(60)));
    }

    #[test]
    fn cues_come_first_within_the_budget() {
        let seek = |id: &[u8], pos: u64| {
            let body = [
                element(&[0x53, 0xAB], id),
                element(&[0x53, 0xAC], &pos.to_be_bytes()),
            ];
            element(&[0x4D, 0xBB], &body.concat())
        };
        // Attachments of 20 MB before the Clusters, the Cues after them.
        let seekhead = [
            seek(&[0x19, 0x41, 0xA4, 0x69], 200),
            seek(&[0x1C, 0x53, 0xBB, 0x6B], 30_000_000),
        ]
        .concat();
        let mut head = [
            element(&EBML_MAGIC, &element(&[0x42, 0x82], b"matroska")),
            [
                0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            ]
            .to_vec(),
            element(&[0x11, 0x4D, 0x9B, 0x74], &seekhead),
        ]
        .concat();
        let segment = rfind(&head, &[0x18, 0x53, 0x80, 0x67]) + 12;
        let void = segment as usize + 200 - head.len() - 9;
        head.extend(element(&[0xEC], &vec![0; void]));
        let size = segment + 30_001_000;
        let attachments = (20_000_000u64 | 1 << 56).to_be_bytes();
        head.extend([&[0x19, 0x41, 0xA4, 0x69][..], &attachments, &[0; 100]].concat());
        let l = sniff(&head, size);
        assert_sane(&l, head.len(), size);
        let cues = segment + 30_000_000;
        assert!(l.index.iter().any(|r| r.start == cues), "{:?}", l.index);
        // The walk goes on past the Attachments to find the first Cluster.
        let more = l.more.expect("a walk on to the Clusters");
        assert_eq!(more.range.start, segment + 200 + 12 + 20_000_000);
    }

    #[test]
    fn bitrate() {
        assert_eq!(
            bytes_per_second(27_882, Duration::from_secs(2)),
            Some(13_941)
        );
        assert_eq!(bytes_per_second(1, Duration::ZERO), None);
        assert_eq!(
            bytes_per_second(u64::MAX, Duration::from_nanos(1)),
            Some(u64::MAX)
        );
    }

    /// Runs `sniff`, then every follow-up it asks for with `bytes`.
    fn sniff_all(head: &[u8], size: u64, more: &[u8]) {
        let mut l = sniff(head, size);
        assert_sane(&l, head.len(), size);
        let _ = duration(head);
        let mut steps = 0;
        while let Some(m) = l.more.take() {
            steps += 1;
            assert!(steps <= MAX_STEPS, "follow-ups never end");
            l = resume(&m, more, size);
            assert_sane(&l, head.len(), size);
        }
    }

    fn seeds() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![]),
            Just(EBML_MAGIC.to_vec()),
            Just(b"\0\0\0\x10ftypisom\0\0\0\0".to_vec()),
            Just(b"\0\0\0\x01mdat".to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn fuzz_sniff(
            seed in seeds(),
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            more in proptest::collection::vec(any::<u8>(), 0..200),
            size in prop_oneof![0u64..5000, any::<u64>()],
        ) {
            let head = [seed, tail].concat();
            sniff_all(&head, size, &more);
            let _ = duration(&more);
        }

        /// Real files cut anywhere: the head, the follow-up reads and the
        /// index ranges together hold the whole real index.
        #[test]
        fn any_cut_of_a_real_file_finds_its_index(which in 0usize..4, cut in 1usize..30_000) {
            let name = ["tail.mp4", "faststart.mp4", "video.mkv", "video.webm"][which];
            let file = fixture(name);
            let size = file.len() as u64;
            let index = match which {
                0 | 1 => { let (s, e) = moov(&file); s..e }
                _ => rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B])..size,
            };
            let cut = cut.min(file.len());
            let mut l = sniff(&file[..cut], size);
            let mut have = vec![0..cut as u64];
            while let Some(m) = l.more.take() {
                let r = m.range.start as usize..m.range.end as usize;
                have.push(m.range.clone());
                l = resume(&m, &file[r], size);
            }
            have.extend(l.index.iter().cloned());
            for byte in index.clone() {
                prop_assert!(have.iter().any(|r| r.contains(&byte)), "{name}: byte {byte} of {index:?} missing; cut {cut}, got {have:?}");
            }
        }

        /// Real files with bytes changed and cut at any length: the parser
        /// goes deep into these.
        #[test]
        fn fuzz_mutated_fixtures(
            which in 0usize..5,
            cut in 0usize..30_000,
            changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            size in prop_oneof![Just(None), (0u64..100_000).prop_map(Some), any::<u64>().prop_map(Some)],
        ) {
            let name = ["tail.mp4", "faststart.mp4", "fragmented.mp4", "video.mkv", "video.webm"][which];
            let mut file = fixture(name);
            let size = size.unwrap_or(file.len() as u64);
            file.truncate(cut.max(1));
            let n = file.len();
            for (at, byte) in changes {
                // Mostly in the headers at the start, where parsing happens.
                file[at % n.min(if at % 2 == 0 { 700 } else { n })] = byte;
            }
            sniff_all(&file, size, &file);
            let _ = duration(&file);
        }
    }
}
