//! What lives on disk: chunk files, the SQLite index, eviction, recovery.

pub(crate) mod chunks;
pub(crate) mod error;
pub(crate) mod evict;
#[cfg(any(test, feature = "testing"))]
pub mod faults;
pub(crate) mod index;
pub(crate) mod read;
pub mod recover;
pub mod summary;
pub(crate) mod walk;

pub(crate) use chunks::ChunkFiles;
pub(crate) use evict::{Evictor, Pin, Pins};
pub(crate) use index::{Index, MediaId};
