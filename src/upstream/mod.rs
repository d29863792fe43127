//! Requests to origins: the client and its allowlist, what a response head
//! says, and a reader that resumes broken transfers.

pub mod allow;
mod answer;
mod client;
mod error;
mod head;
mod key;
mod origins;
pub(crate) mod resume;
mod rule;

pub(crate) use answer::Answer;
pub(crate) use client::{parse_url, redact, Settings, Upstream};
pub(crate) use error::UpstreamError;
pub(crate) use head::{Head, Version};
pub use key::QueryFilter;
pub(crate) use key::{shown_names, UrlSet};
pub(crate) use origins::Limits;
pub(crate) use resume::{ResumingBody, PROGRESS};
pub(crate) use rule::{OriginRule, Rules, UpstreamRule};
