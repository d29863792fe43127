//! The real-server suite: spool with the servers people run beside it,
//! from Debian's packages. `scripts/test-servers` installs them first.
//!
//! - `prometheus`: a real Prometheus scrapes spool's control plane with the
//!   admin token while streams play, and every query of the Grafana
//!   dashboard in `deploy/monitoring/` is evaluated with `promtool`.
//! - `proxies`: Caddy and nginx with the examples of `deploy/proxies/`,
//!   ffmpeg playing through them, per-client limits on the real clients.

#[path = "../common/mod.rs"]
mod common;

// ffmpeg's media and runs, shared with the player suite.
#[path = "../players/tools.rs"]
#[allow(dead_code)]
mod tools;

mod prometheus;
mod proxies;
