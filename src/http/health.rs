//! `/health/live`, `/health/ready` and `/metrics`.

use std::path::PathBuf;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use crate::cache::memcache::MemCache;
use crate::disk::{Breaker, Disk};
use crate::metrics::Metrics;
use crate::store::Index;

/// What readiness looks at (and its detailed answer reports). Cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct Readiness {
    pub index: Index,
    pub cache_dir: PathBuf,
    pub disk: Disk,
    pub breaker: Breaker,
    pub memcache: MemCache,
    /// The cache directory could not hold an index: spool serves
    /// uncached, and is not ready.
    pub index_in_memory: bool,
}

/// Readiness. The status is for everyone (load balancers, container
/// health checks); the details only for `detailed` (admin) askers.
pub(crate) async fn ready(h: Readiness, detailed: bool) -> Response {
    let index_ok = h
        .index
        .call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
        .await
        .is_ok();
    let dir = h.cache_dir.clone();
    let dir_ok = tokio::task::spawn_blocking(move || dir.is_dir())
        .await
        .unwrap_or(false);
    // spool serves while the disk is full or caching is paused (streams go
    // on uncached), so those are reported but do not make it unready.
    let ok = index_ok && dir_ok && !h.index_in_memory;
    let last = h.disk.last();
    let space = last.map(|l| l.0);
    let mut reasons = Vec::new();
    if !index_ok {
        reasons.push("index unavailable");
    }
    if !dir_ok {
        reasons.push("cache directory missing");
    }
    if h.index_in_memory {
        reasons.push("cache directory unusable: serving uncached");
    }
    let body = if !detailed {
        serde_json::json!({ "ready": ok })
    } else {
        serde_json::json!({
        "ready": ok,
        "reasons": reasons,
        "index": if index_ok { "ok" } else { "unavailable" },
        "cache_dir": if dir_ok { "ok" } else { "missing" },
        "disk": {
            "level": last.map(|l| l.1.as_str()),
            "free_bytes": space.map(|s| s.free_bytes),
            "total_bytes": space.map(|s| s.total_bytes),
            // A failing measurement: the figures above are the last good
            // sample, and cleanups act on it.
            "measure_error": h.disk.measure_error(),
        },
        "caching": caching_state(h.breaker.mode()),
        "memory_cache_bytes": h.memcache.bytes(),
        })
    };
    let mut r = Response::new(Bytes::from(body.to_string()).into());
    *r.status_mut() = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn metrics(metrics: &Metrics, breaker: &Breaker, memcache: &MemCache) -> Response {
    // State the disk monitor samples every interval, read now: a scrape
    // right after caching paused or resumed sees it.
    metrics.caching_paused.set(i64::from(!breaker.is_writing()));
    metrics.memory_cache_bytes.set(memcache.bytes() as i64);
    let mut r = Response::new(Bytes::from(metrics.encode()).into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// How the control plane tells the caching mode: a hold is an admin's
/// pause (only the admin API holds caching).
pub(crate) fn caching_state(mode: crate::disk::breaker::Mode) -> String {
    match mode {
        crate::disk::breaker::Mode::Held => "paused: by admin".into(),
        m => m.describe(),
    }
}
