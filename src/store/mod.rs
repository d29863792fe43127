//! What lives on disk: chunk files, the SQLite index, eviction, recovery.

pub mod chunks;
pub mod evict;
pub mod index;
pub mod recover;
