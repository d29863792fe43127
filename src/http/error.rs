//! The one place where errors become HTTP statuses.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
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
    r
}

/// The status a player gets for an origin failure.
pub(crate) fn status_of(e: &UpstreamError) -> StatusCode {
    match e {
        UpstreamError::BadUrl(_) => StatusCode::BAD_REQUEST,
        UpstreamError::Denied(_) => StatusCode::FORBIDDEN,
        UpstreamError::Status(s) => *s,
        UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::BadStatus(_)
        | UpstreamError::Unreachable(_)
        | UpstreamError::Protocol(_)
        | UpstreamError::RangeIgnored(..)
        | UpstreamError::Changed => StatusCode::BAD_GATEWAY,
    }
}

/// An origin failure as a response: its status and a one-line reason.
pub(crate) fn error(e: &UpstreamError) -> Response {
    text(status_of(e), &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e), status, "{e}");
        }
    }
}
