//! Where a walk starts and goes on: the format from the first bytes,
//! follow-up reads, and the duration.

use std::time::Duration;

use super::mkv::*;
use super::mp4::*;
use super::scan::*;

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
        Some(Kind::Unknown) | None => finish(Kind::Unknown, Vec::new(), scan, size, None),
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
    finish(Kind::Unknown, Vec::new(), scan, size, more)
}
