//! spool: a caching media streaming proxy.
//!
//! A player asks `GET /stream?url=<origin URL>` with byte ranges; spool
//! answers from a progressive on-disk chunk cache indexed in SQLite,
//! downloading what is missing from the origin while it streams it.
//!
//! Layers, each a folder; imports point down only:
//! `http -> cache -> {store, upstream} -> disk` (see docs/ARCHITECTURE.md).
//! `run` serves on a listener until `shutdown` resolves, so tests can bind
//! port 0 and stop the server when they are done.

// No unsafe code but one audited call no crate wraps yet: `cachestat(2)`
// in store/resident.rs (allowed there alone).
#![deny(unsafe_code)]

pub(crate) mod cache;
pub mod cmd;
pub mod config;
pub mod config_file;
pub mod container;
pub mod disk;
pub mod history;
pub(crate) mod http;
mod manifest;
pub(crate) mod metrics;
mod rules;
mod server;
pub mod signing;
pub(crate) mod store;
pub mod upstream;

pub use config::Config;
pub use server::{run, Listeners, Server};

/// What the integration tests reach inside spool (the `testing` feature).
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::cache::inflight::live as live_downloads;
    pub use crate::store::error::WriteStage;
    pub use crate::store::faults::Fault;
    pub use crate::store::recover::{Problem, Report};
    pub use crate::store::resident::supported as page_cache_answered;
    pub use crate::store::walk::ScanOptions;
}
