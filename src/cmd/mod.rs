//! `spool verify`, `spool stats`, `spool sign`, `spool healthcheck`,
//! `spool ls`, `spool prefetch`, `spool pin` and `spool unpin`: looking at a cache or a running spool
//! from the shell.

mod healthcheck;
mod ls;
mod pin;
mod prefetch;
mod remote;
mod sign;
mod stats;
mod verify;

pub use healthcheck::healthcheck;
pub use ls::ls;
pub use pin::pin;
pub use prefetch::prefetch;
pub use sign::sign;
pub use stats::stats;
pub use verify::verify;
