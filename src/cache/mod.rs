//! The cache: media, chunk slots, downloads and response bodies.

pub mod body;
pub mod catalog;
pub mod inflight;
pub mod media;
pub mod memcache;
pub mod persist;
pub mod run;
