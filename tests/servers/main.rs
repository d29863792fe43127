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

use std::process::Child;

/// A server a test started: killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on loopback (free when asked; a server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
