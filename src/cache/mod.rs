//! The cache: media and their chunk slots, downloads from the origin,
//! response bodies, chunk writes, and the upkeep that keeps the disk in
//! bounds.
//!
//! Inside this folder, imports point one way:
//! `error, readahead, pace <- inflight, playhead <- media <- catalog <- memcache <- persist
//! <- fetch <- driver <- run <- handle <- open, body <- admin, prefetch`,
//! `run <- index_first <- open`, with `upkeep` beside them.

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod catalog;
mod driver;
mod error;
mod fetch;
mod gates;
mod handle;
mod index_first;
pub(crate) mod inflight;
mod lru;
pub(crate) mod media;
pub(crate) mod memcache;
mod open;
mod pace;
pub(crate) mod persist;
mod playhead;
mod playlists;
pub(crate) mod prefetch;
pub(crate) mod readahead;
#[cfg(test)]
pub(crate) mod rig;
pub(crate) mod run;
mod tasks;
pub(crate) mod upkeep;
mod watch;

pub(crate) use error::CacheError;
pub(crate) use handle::{Cache, Settings};
pub(crate) use open::Opened;
pub(crate) use playlists::{Playlist, Playlists};
pub(crate) use readahead::Policy;
pub(crate) use tasks::Tasks;
