//! Matroska and WebM: the EBML header, the `Segment` header, its
//! top-level element headers up to the first `Cluster`, the `SeekHead`
//! entries and `Info`, as `container` needs them.

use std::ops::Range;
use std::time::Duration;

use super::scan::*;

pub(super) const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
pub(super) const EBML: u32 = 0x1A45_DFA3;
pub(super) const SEGMENT: u32 = 0x1853_8067;
pub(super) const SEEKHEAD: u32 = 0x114D_9B74;
pub(super) const SEEK: u32 = 0x4DBB;
pub(super) const SEEK_ID: u32 = 0x53AB;
pub(super) const SEEK_POSITION: u32 = 0x53AC;
pub(super) const INFO: u32 = 0x1549_A966;
pub(super) const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
pub(super) const DURATION: u32 = 0x4489;
pub(super) const CLUSTER: u32 = 0x1F43_B675;
pub(super) const CUES: u32 = 0x1C53_BB6B;
pub(super) const VOID: u32 = 0xEC;
pub(super) const CRC32: u32 = 0xBF;
/// The top-level elements of a Segment.
pub(super) const LEVEL1: [u32; 8] = [
    SEEKHEAD,
    INFO,
    0x1654_AE6B, // Tracks
    CUES,
    CLUSTER,
    0x1254_C367, // Tags
    0x1043_A770, // Chapters
    0x1941_A469, // Attachments
];

pub(super) struct Element {
    pub(super) id: u32,
    /// Header length (ID and size).
    pub(super) header: u64,
    /// None: unknown size (runs to its parent's end).
    pub(super) size: Option<u64>,
}

/// The element header at the start of `s`: an ID of 1 to 4 bytes, a size
/// of 1 to 8 (all ones: unknown).
pub(super) fn ebml_element(s: &[u8]) -> Head<Element> {
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
pub(super) fn mkv_segment(b: &[u8]) -> Head<Range<u64>> {
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

pub(super) fn mkv_start(head: &[u8], size: u64, mut scan: Scan) -> Layout {
    match mkv_segment(head) {
        Head::Here(segment) => {
            scan.kind = Some(Kind::Matroska);
            scan.segment = segment.start..segment.end.min(size);
            mkv_walk(0, head, segment.start, size, scan)
        }
        Head::Beyond if len(head) < MORE_BYTES => done(scan, size, Some(0..MORE_BYTES)),
        Head::Beyond | Head::Bad => done(scan, size, None),
    }
}

/// Walks the Segment's top-level elements from `pos` through `b` (at file
/// offset `at`), up to the first Cluster.
pub(super) fn mkv_walk(at: u64, b: &[u8], mut pos: u64, size: u64, mut scan: Scan) -> Layout {
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
    done(scan, size, more)
}

/// The child elements in `b` (the last one's body cut to what is there).
pub(super) fn ebml_children(b: &[u8]) -> Vec<(u32, &[u8])> {
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

pub(super) fn mkv_seekhead(body: &[u8], scan: &mut Scan) {
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
pub(super) fn mkv_info(body: &[u8]) -> Option<Duration> {
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
pub(super) fn mkv_info_duration(b: &[u8], pos: u64) -> Option<Duration> {
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
pub(super) fn mkv_ranges(scan: &Scan, size: u64) -> Vec<Range<u64>> {
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

/// The answer for a Matroska file: the ranges its walk found.
fn done(scan: Scan, size: u64, more: Option<Range<u64>>) -> Layout {
    let raw = mkv_ranges(&scan, size);
    finish(Kind::Matroska, raw, scan, size, more)
}
