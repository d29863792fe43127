//! The bottom layer: the cache filesystem's free space and levels, the
//! classes of write failures, and the breaker that decides whether the
//! cache may be written.

pub(crate) mod beneath;
pub(crate) mod blocking;
pub(crate) mod breaker;
mod class;
mod lock;
pub(crate) mod monitor;
mod private;
mod space;

pub(crate) use breaker::Breaker;
pub use class::{out_of_descriptors, WriteClass};
pub use lock::{CacheLock, LockError, LOCK_FILE};
pub(crate) use monitor::{Disk, Thresholds};
pub use private::make_private;
pub(crate) use space::Level;
pub use space::{space, Space};
