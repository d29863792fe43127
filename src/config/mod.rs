//! Command line and environment configuration.
//!
//! Every flag has an environment twin (`SPOOL_<FLAG>`), so the same settings
//! work from a shell, a systemd unit or a docker compose file.
//!
//! `cli.rs`: the subcommands; `serve.rs`: `spool serve`'s settings;
//! `groups.rs`: flag groups several subcommands share; `values.rs`: sizes,
//! read-ahead, optional addresses.

mod cli;
mod groups;
mod serve;
#[cfg(test)]
mod tests;
mod values;

pub use cli::*;
pub use groups::*;
pub use serve::*;
pub use values::*;
