//! Every route spool serves.

use std::convert::Infallible;

use http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::error::text;
use super::health::{self, Health};
use super::stream::{self, Limits};
use crate::cache::Cache;

/// The routes, with the handles their handlers need.
pub(crate) fn routes(
    cache: Cache,
    health: Health,
    limits: Limits,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_cache = warp::any().map(move || cache.clone());
    let with_health = warp::any().map(move || health.clone());
    let stream = warp::path!("stream")
        .and(with_cache)
        .and(warp::any().map(move || limits))
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
