//! What lives on disk: chunk files, the SQLite index, eviction, recovery.

pub(crate) mod chunks;
pub(crate) mod error;
pub(crate) mod evict;
#[cfg(any(test, feature = "testing"))]
pub mod faults;
mod fills;
pub mod history;
pub(crate) mod index;
mod open_files;
pub(crate) mod outbox;
mod queries;
pub(crate) mod read;
pub mod recover;
pub mod resident;
pub(crate) mod rows;
mod schema;
pub mod summary;
mod title_budget;
pub(crate) mod title_rekey;
pub mod titles;
pub(crate) mod walk;

pub(crate) use chunks::ChunkFiles;
pub(crate) use error::IndexError;
pub(crate) use evict::{Evictor, Pin, Pins};
pub(crate) use index::{unix_now, Index};
pub(crate) use rows::{ChunkRow, MediaId, MediaRow, PlaylistRow};
