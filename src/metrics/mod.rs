//! Prometheus metrics, served at `GET /metrics`, and the last hour of
//! traffic the status page draws.

mod registry;
pub(crate) mod traffic;

pub use registry::*;
