//! The real-server suite: spool with the servers people run beside it,
//! from Debian's packages. `scripts/test-servers` installs them first.
//!
//! - `prometheus`: a real Prometheus scrapes spool's control plane with the
//!   admin token while streams play, and every query of the Grafana
//!   dashboard in `deploy/monitoring/` is evaluated with `promtool`.

#[path = "../common/mod.rs"]
mod common;

mod prometheus;
