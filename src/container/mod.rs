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

mod mkv;
mod mp4;
mod scan;
mod sniff;
#[cfg(test)]
mod tests;

pub use scan::{Kind, Layout, More, MAX_INDEX_BYTES, MAX_STEPS, MORE_BYTES};
pub use sniff::{bytes_per_second, duration, resume, sniff};
