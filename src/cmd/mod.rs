//! `spool verify`, `spool stats`, `spool sign`, `spool healthcheck`,
//! `spool ls` and `spool prefetch`: looking at a cache or a running spool
//! from the shell.

mod healthcheck;
mod ls;
mod prefetch;
mod remote;
mod sign;
mod stats;
mod verify;

pub use healthcheck::healthcheck;
pub use ls::ls;
pub use prefetch::prefetch;
pub use sign::sign;
pub use stats::stats;
pub use verify::verify;
