//! Where the errors of streams become HTTP statuses (the control plane's
//! answers and playlist answers map their own few).

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use warp::reply::Response;

use crate::upstream::UpstreamError;

/// A short plain-text answer.
pub(crate) fn text(status: StatusCode, reason: &str) -> Response {
    let mut r = Response::new(Bytes::from(format!("{reason}\n")).into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    challenge(r)
}

/// Every 401 names a challenge (RFC 9110 §15.5.2), an upstream's passed
/// on too: spool's own (a bearer token), never the upstream's, which would
/// have a browser ask for credentials spool does not forward.
fn challenge(mut r: Response) -> Response {
    if r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .entry(header::WWW_AUTHENTICATE)
            .or_insert(HeaderValue::from_static("Bearer realm=\"spool\""));
    }
    r
}

/// The status a player gets for an origin failure.
pub(crate) fn status_of(e: &UpstreamError) -> StatusCode {
    match e {
        UpstreamError::BadUrl(_) => StatusCode::BAD_REQUEST,
        UpstreamError::Denied(_) => StatusCode::FORBIDDEN,
        UpstreamError::Status(s) => *s,
        UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::Busy(..) => StatusCode::SERVICE_UNAVAILABLE,
        UpstreamError::BadStatus(_)
        | UpstreamError::Unreachable(_)
        | UpstreamError::Protocol(_)
        | UpstreamError::RangeIgnored(..)
        | UpstreamError::Changed => StatusCode::BAD_GATEWAY,
    }
}

/// An origin failure as a response: its status and a one-line reason.
pub(crate) fn error(e: &UpstreamError) -> Response {
    let mut r = text(status_of(e), &e.to_string());
    // A busy origin's pause is the player's to take too.
    if let UpstreamError::Busy(_, wait) = e {
        let secs = wait.map_or(1, |d| d.as_secs().clamp(1, 3600));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Bytes::from(text).into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    challenge(r)
}

/// A JSON error: `{"error": reason}` (the control plane's errors).
pub(crate) fn json_error(status: StatusCode, reason: &str) -> Response {
    json(status, &serde_json::json!({ "error": reason }))
}

/// 405 with the methods an admin endpoint takes (`Allow`).
pub(super) fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this endpoint takes {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_401_names_a_challenge() {
        for r in [
            error(&UpstreamError::Status(StatusCode::UNAUTHORIZED)),
            text(StatusCode::UNAUTHORIZED, "no"),
            json_error(StatusCode::UNAUTHORIZED, "no"),
        ] {
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Bearer realm=\"spool\""
            );
        }
        let r = error(&UpstreamError::Status(StatusCode::FORBIDDEN));
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn error_statuses() {
        let cases = [
            (UpstreamError::Timeout, StatusCode::GATEWAY_TIMEOUT),
            (
                UpstreamError::BadStatus(StatusCode::SERVICE_UNAVAILABLE),
                StatusCode::BAD_GATEWAY,
            ),
            (
                UpstreamError::Status(StatusCode::NOT_FOUND),
                StatusCode::NOT_FOUND,
            ),
            (UpstreamError::Denied("x".into()), StatusCode::FORBIDDEN),
            (UpstreamError::BadUrl("x".into()), StatusCode::BAD_REQUEST),
            (UpstreamError::Changed, StatusCode::BAD_GATEWAY),
            (
                UpstreamError::Busy(StatusCode::TOO_MANY_REQUESTS, None),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e), status, "{e}");
        }
    }
}
