//! Playlists and manifests as text: HLS (RFC 8216) and DASH (ISO/IEC
//! 23009-1), what one says about itself (VOD or live, how long it stays
//! valid) and the same text with every URI in it spelled by the caller.
//! Pure functions; fetching and keeping them is the cache's
//! (`cache/playlists.rs`), spelling URIs back at spool is HTTP's.

pub(crate) mod dash;
pub(crate) mod hls;
mod kind;
mod mpd;
mod outline;

pub(crate) use kind::{named, typed, Kind, DASH_TYPE, HLS_TYPES};
pub(crate) use outline::{Outline, Variant};
