//! HTTP: routes, byte ranges, conditional requests, multipart framing,
//! health and metrics endpoints. `error.rs` is the one place where errors
//! become HTTP statuses.

mod access;
mod admin;
mod conditional;
mod error;
mod health;
mod listener;
mod multipart;
pub(crate) mod range;
mod routes;
mod stream;

pub(crate) use access::Access;
pub(crate) use health::Health;
pub(crate) use listener::{serve, ConnLimits};
pub(crate) use stream::Limits;
