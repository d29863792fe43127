//! Why the origin could not give what was asked.

use http::StatusCode;

/// Why the origin could not give what was asked. The HTTP layer maps each
/// to the status a player sees (`http::status_of`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("bad url: {0}")]
    BadUrl(String),
    #[error("upstream destination not allowed: {0}")]
    Denied(String),
    /// The origin answered with an error status that players should see
    /// as it is (404, 403, 401, 410).
    #[error("origin answered {0}")]
    Status(StatusCode),
    /// The origin asks spool to slow down (429, or 503 with Retry-After),
    /// and how long to wait when it said.
    #[error("origin answered {0} (too busy)")]
    Busy(StatusCode, Option<std::time::Duration>),
    /// The origin answered with a status spool cannot use (5xx and others).
    #[error("origin answered {0}")]
    BadStatus(StatusCode),
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin timed out")]
    Timeout,
    #[error("origin sent an unusable answer: {0}")]
    Protocol(String),
    /// The origin ignores Range, and reaching the wanted byte would mean
    /// downloading and dropping more than `--max-skip` bytes.
    #[error(
        "the origin ignores Range requests; byte {0} is past --max-skip ({1} bytes) from its start"
    )]
    RangeIgnored(u64, u64),
    /// The origin's copy is not the version spool has (size or
    /// validators differ).
    #[error("the origin's media changed")]
    Changed,
}

impl UpstreamError {
    /// Its class, as the history records it: `status 503`, `timeout`,
    /// `unreachable`, `protocol`, `denied`, `bad_url`, `range_ignored`,
    /// `changed`.
    pub fn class(&self) -> String {
        match self {
            UpstreamError::Status(s) | UpstreamError::BadStatus(s) | UpstreamError::Busy(s, _) => {
                format!("status {}", s.as_u16())
            }
            UpstreamError::BadUrl(_) => "bad_url".into(),
            UpstreamError::Denied(_) => "denied".into(),
            UpstreamError::Unreachable(_) => "unreachable".into(),
            UpstreamError::Timeout => "timeout".into(),
            UpstreamError::Protocol(_) => "protocol".into(),
            UpstreamError::RangeIgnored(..) => "range_ignored".into(),
            UpstreamError::Changed => "changed".into(),
        }
    }

    /// Whether trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Status(_)
                | UpstreamError::Denied(_)
                | UpstreamError::BadUrl(_)
                | UpstreamError::Changed
                | UpstreamError::RangeIgnored(..)
        )
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> UpstreamError {
        // reqwest names the URL, query and all; credentials in a query must
        // reach neither logs nor players.
        let e = e.without_url();
        if e.is_timeout() {
            return UpstreamError::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(d) = s.downcast_ref::<DeniedError>() {
                return UpstreamError::Denied(d.0.clone());
            }
            source = s.source();
        }
        if e.is_redirect() {
            return UpstreamError::Protocol(error_chain(&e));
        }
        UpstreamError::Unreachable(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DeniedError(pub String);
