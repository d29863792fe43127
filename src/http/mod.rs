//! HTTP: routes, byte ranges, conditional requests, multipart framing,
//! health and metrics endpoints. This is the one place where errors become
//! HTTP statuses (`status_of`).

mod conditional;
mod health;
mod multipart;
pub(crate) mod range;
mod stream;

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::cache::Cache;
use crate::upstream::UpstreamError;
pub(crate) use health::Health;

/// Every route spool serves.
pub(crate) fn routes(
    cache: Cache,
    health: Health,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_cache = warp::any().map(move || cache.clone());
    let with_health = warp::any().map(move || health.clone());
    let stream = warp::path!("stream")
        .and(with_cache)
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .then(stream::handle);
    let live = warp::path!("health" / "live").map(|| text(StatusCode::OK, "ok"));
    let ready = warp::path!("health" / "ready")
        .and(with_health.clone())
        .then(health::ready);
    let metrics = warp::path!("metrics")
        .and(with_health)
        .map(|h: Health| health::metrics(&h));
    stream
        .or(live)
        .unify()
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::NOT_FOUND, "not found")) })
        .unify()
}

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
        | UpstreamError::Changed => StatusCode::BAD_GATEWAY,
    }
}

/// An origin failure as a response: its status and a one-line reason.
fn error(e: &UpstreamError) -> Response {
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
