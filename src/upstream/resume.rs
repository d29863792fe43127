//! The bytes `[pos, end]` of one media version from the origin, resumed
//! from the byte reached whenever a transfer breaks. Download runs, chunk
//! head fetches and the mid-stream passthrough all read through it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};
use url::Url;

use super::answer::Answer;
use super::client::{redact, Upstream};
use super::error::UpstreamError;
use super::head::{Head, Version};
use super::key::UrlSet;
use super::rule::UpstreamRule;

pub(crate) struct ResumingBody {
    upstream: Upstream,
    /// The URLs that reached the media, the newest first.
    urls: UrlSet,
    /// The one the last request went to.
    url: Arc<Url>,
    /// The rule its requests' redirects obey.
    rule: UpstreamRule,
    version: Arc<Version>,
    /// First byte asked for.
    first: u64,
    /// Next byte to deliver.
    pos: u64,
    /// Last byte to deliver (inclusive).
    end: u64,
    resp: Option<Answer>,
    /// Bytes of the response before `pos` still to drop (an origin that
    /// ignored Range sends the whole media).
    skip: u64,
    /// Failures in a row: not reset by a trickle of bytes, only once
    /// `PROGRESS` bytes arrived since the last failure.
    failures: u32,
    /// Bytes delivered since the last failure.
    since_failure: u64,
    /// Whether the last failure broke a body (a failed request is already
    /// in the history).
    body_broke: bool,
}

impl ResumingBody {
    pub fn new(
        upstream: &Upstream,
        urls: &UrlSet,
        rule: UpstreamRule,
        version: &Arc<Version>,
        pos: u64,
        end: u64,
    ) -> ResumingBody {
        ResumingBody {
            upstream: upstream.clone(),
            urls: urls.clone(),
            url: urls.latest(),
            rule,
            version: version.clone(),
            first: pos,
            pos,
            end,
            resp: None,
            skip: 0,
            failures: 0,
            since_failure: 0,
            body_broke: false,
        }
    }

    /// Starts from a response already in hand (the cold probe's); one that
    /// does not fit is dropped and the range asked for again.
    pub fn with_response(mut self, resp: Answer, head: &Head) -> ResumingBody {
        match self
            .version
            .check(head, self.pos)
            .and_then(|skip| self.upstream.may_skip(skip).map(|_| skip))
        {
            Ok(skip) => {
                self.skip = skip;
                self.resp = Some(resp);
            }
            Err(e) => debug!(error = %e, "first response unusable; asking again"),
        }
        self
    }

    /// Last byte this body delivers.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether its transfer broke and had to be resumed since its last
    /// megabyte of progress.
    pub fn is_troubled(&self) -> bool {
        self.failures > 0
    }

    /// The first byte this body was asked for.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The byte this body delivers next (past `end` once it delivered all).
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Sends the request now, so that its first bytes are on the way before
    /// they are read (a run asking for its next stretch while it still
    /// reads the last one).
    pub async fn open(&mut self) -> Result<(), UpstreamError> {
        if self.resp.is_some() || self.pos > self.end {
            return Ok(());
        }
        // A new URL a player brought first, then the one the origin
        // answered last; when it refuses one (an expired presigned URL, a
        // made-up one), the others.
        let urls = self.urls.all();
        for (i, url) in urls.iter().enumerate() {
            self.url = url.clone();
            // A URL the origin never accepted is judged harder: any 4xx
            // (a CDN answers a made-up token with 404) says it is no good.
            let unproven = !self.urls.is_accepted(url);
            match self.request().await {
                Err(e) if refused(&e) || (unproven && client_error(&e)) => {
                    self.urls.refused(url);
                    if i + 1 == urls.len() {
                        return Err(e);
                    }
                    debug!(url = %redact(url), error = %e, "origin refused this URL of the media; asking with another");
                }
                Ok(()) => {
                    self.urls.answered(url);
                    return Ok(());
                }
                r => return r,
            }
        }
        Ok(())
    }

    async fn request(&mut self) -> Result<(), UpstreamError> {
        let range = Some((self.pos, Some(self.end)));
        let resp = self.upstream.get(&self.url, &self.rule, range).await?;
        let head = resp.head()?;
        self.skip = self.version.check(&head, self.pos)?;
        self.upstream.may_skip(self.skip)?;
        self.resp = Some(resp);
        Ok(())
    }

    /// The next bytes at `pos`, never past `end`; `Ok(None)` once all are
    /// delivered. Broken transfers are resumed up to `--upstream-retries`
    /// times in a row.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        while self.pos <= self.end {
            match self.read().await {
                Ok(mut piece) => {
                    piece.truncate((self.end + 1 - self.pos) as usize);
                    self.pos += piece.len() as u64;
                    self.since_failure += piece.len() as u64;
                    if self.since_failure >= PROGRESS {
                        self.failures = 0;
                    }
                    return Ok(Some(piece));
                }
                Err(UpstreamError::Changed) => return Err(UpstreamError::Changed),
                Err(e) => {
                    self.failures += 1;
                    self.since_failure = 0;
                    let metrics = self.upstream.metrics();
                    metrics.upstream_errors.inc();
                    self.resp = None;
                    self.skip = 0;
                    if e.is_permanent() || self.failures > self.upstream.retries() {
                        warn!(url = %redact(&self.url), pos = self.pos, error = %e, "upstream transfer failed");
                        if self.body_broke {
                            self.upstream.failed(&self.url, &e);
                        }
                        return Err(e);
                    }
                    debug!(pos = self.pos, error = %e, "upstream transfer broke; resuming");
                    metrics.upstream_resumes.inc();
                    // An origin that asks for a pause gets it (bounded).
                    let wait = match e {
                        UpstreamError::Busy(_, Some(d)) => d.min(MAX_RETRY_AFTER),
                        _ => backoff(self.failures),
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(None)
    }

    /// Bytes at `pos`, opening (or reopening) the request as needed.
    async fn read(&mut self) -> Result<Bytes, UpstreamError> {
        loop {
            self.body_broke = false;
            self.open().await?;
            self.body_broke = true;
            let resp = self.resp.as_mut().expect("opened");
            let Some(mut piece) = resp.next_piece().await? else {
                return Err(UpstreamError::Protocol("body ended early".into()));
            };
            if self.skip > 0 {
                let drop = self.skip.min(piece.len() as u64);
                self.skip -= drop;
                piece = piece.split_off(drop as usize);
            }
            if !piece.is_empty() {
                return Ok(piece);
            }
        }
    }
}

/// Bytes a resumed transfer must deliver before its failures are forgiven:
/// an origin that breaks every answer after a few bytes must not earn
/// endless retries.
pub(crate) const PROGRESS: u64 = 1 << 20;

/// How an origin refuses a URL it no longer honours (an expired
/// signature), as opposed to a media that is not there.
pub(crate) fn refused(e: &UpstreamError) -> bool {
    use reqwest::StatusCode;
    matches!(e, UpstreamError::Status(s)
        if *s == StatusCode::UNAUTHORIZED || *s == StatusCode::FORBIDDEN || *s == StatusCode::GONE)
}

/// A 4xx answer other than a busy origin's or an unsatisfiable range.
fn client_error(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Status(s) | UpstreamError::BadStatus(s)
        if s.is_client_error() && *s != reqwest::StatusCode::RANGE_NOT_SATISFIABLE)
}

/// The longest `Retry-After` a transfer waits before asking again (a
/// longer one fails it: the player is told to come back).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50 << failures.min(5))
}
