//! MP4 and QuickTime: top-level box headers and `moov/mvhd` (and
//! `mvex/mehd`), as `container` needs them.

use std::time::Duration;

use super::scan::*;

/// Box types that may open an MP4 or QuickTime file.
pub(super) const MP4_FIRST: [&[u8; 4]; 8] = [
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin",
];

pub(super) struct BoxHeader {
    pub(super) kind: [u8; 4],
    /// Header length: 8, or 16 with a 64-bit size.
    pub(super) header: u64,
    /// Absolute end; may lie beyond the file in a hostile or cut file.
    pub(super) end: u64,
}

/// The box header at file offset `pos` of `b` (which starts at `at`).
/// `size` is the file's size (a box of size 0 runs to it).
pub(super) fn mp4_box(b: &[u8], at: u64, pos: u64, size: u64) -> Head<BoxHeader> {
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

pub(super) fn mp4_plausible(b: &[u8]) -> bool {
    match mp4_box(b, 0, 0, len(b)) {
        Head::Here(h) => MP4_FIRST.contains(&&h.kind),
        Head::Beyond | Head::Bad => false,
    }
}

/// Walks top-level boxes from `pos` through `b` (at file offset `at`).
pub(super) fn mp4_walk(at: u64, b: &[u8], mut pos: u64, size: u64, mut scan: Scan) -> Layout {
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
    let raw = scan.boxes.clone();
    finish(Kind::Mp4, raw, scan, size, more)
}

/// The boxes in `b` (the last one's body cut to what is there).
pub(super) fn mp4_children(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
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
pub(super) fn mp4_moov(body: &[u8]) -> (Option<Duration>, bool) {
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
pub(super) fn mp4_moov_duration(b: &[u8]) -> Option<Duration> {
    let (_, moov) = mp4_children(b).into_iter().find(|(k, _)| k == b"moov")?;
    mp4_moov(moov).0
}
