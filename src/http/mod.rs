//! HTTP: routes, the URL forms, byte ranges, conditional requests,
//! multipart framing, playlists and manifests rewritten, health and
//! metrics endpoints. `error.rs` maps a stream's errors to statuses (the
//! control plane and playlist answers map their own few).

mod access;
mod admin;
mod body;
mod conditional;
mod control;
mod error;
mod forwarded;
mod health;
mod inert;
mod links;
mod listener;
mod multipart;
mod playlist;
mod prefetch;
pub(crate) mod range;
mod routes;
mod sendfile;
mod sign;
mod stall;
mod stream;
mod titles;

pub(crate) use access::Access;
pub(crate) use admin::Admin;
pub(crate) use control::Control;
pub use forwarded::ForwardedHeader;
pub(crate) use forwarded::{prefix_of, Front};
pub(crate) use health::Readiness;
pub(crate) use inert::Inert;
pub(crate) use listener::{serve, ConnLimits};
pub(crate) use routes::{admin_routes, media_routes};
pub(crate) use stream::Limits;
