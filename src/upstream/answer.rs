//! An origin's answer as the layers above see it: its status and head,
//! and its body read piece by piece within the upstream timeout. No type
//! of the HTTP client leaves `upstream/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::error::UpstreamError;
use super::head::Head;
use crate::metrics::Metrics;

/// An origin's answer whose body has not been read yet.
pub(crate) struct Answer {
    resp: reqwest::Response,
    /// The longest silence in its body.
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Answer {
    pub(super) fn new(resp: reqwest::Response, timeout: Duration, metrics: Arc<Metrics>) -> Answer {
        Answer {
            resp,
            timeout,
            metrics,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.resp.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.resp.headers()
    }

    /// The body's length, when the origin said it.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// What the head says: size, type, validators, the span sent.
    pub fn head(&self) -> Result<Head, UpstreamError> {
        Head::parse(self.status(), self.headers())
    }

    /// The next piece of the body, `Ok(None)` at its end; an error when
    /// the origin stays silent past the upstream timeout.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let piece = tokio::time::timeout(self.timeout, self.resp.chunk())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        if let Some(p) = &piece {
            self.metrics.upstream_bytes.inc_by(p.len() as u64);
        }
        Ok(piece)
    }
}
