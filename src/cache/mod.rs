//! The cache: media and their chunk slots, downloads from the origin,
//! response bodies, chunk writes, playlists, and the upkeep that keeps
//! the disk in bounds.
//!
//! Inside this folder, imports point one way:
//! `error, readahead, pace, gates, lru, settings, titles <- inflight, playhead, streams <- media <- catalog
//! <- memcache <- persist <- fill <- fetch <- driver <- run <- index_first <- open, body <- cached, admin,
//! playlists <- handle <- prefetch <- filler`, with `upkeep` beside them. `Cache`
//! (handle.rs) is the one handle the layers above hold; each concern
//! behind it is a handle of its own (`Opener`, `Bodies`, `Playlists`,
//! `Inventory`).

mod access;
pub(crate) mod admin;
pub(crate) mod body;
mod cached;
pub(crate) mod catalog;
mod driver;
mod error;
mod fetch;
pub(crate) mod fill;
pub(crate) mod filler;
mod gates;
mod handle;
mod index_first;
pub(crate) mod inflight;
pub(crate) mod journal;
mod lru;
pub(crate) mod media;
pub(crate) mod memcache;
mod open;
mod pace;
mod parts;
pub(crate) mod persist;
mod playhead;
mod playlists;
pub(crate) mod prefetch;
mod progress;
pub(crate) mod readahead;
#[cfg(test)]
pub(crate) mod rig;
pub(crate) mod run;
mod sessions;
mod settings;
mod streams;
mod tasks;
mod titles;
pub(crate) mod upkeep;
mod warm;
mod watch;

pub(crate) use access::Accesses;
pub(crate) use error::CacheError;
pub(crate) use handle::Cache;
pub(crate) use open::Opened;
pub(crate) use playlists::{Playlist, Playlists};
pub(crate) use sessions::Sessions;
pub(crate) use settings::Settings;
pub(crate) use tasks::Tasks;
pub(crate) use titles::Titles;
