//! HTTP routes: `/stream`, `/health/live`, `/health/ready`, `/metrics`.
//! This is the one place where errors become HTTP statuses.

pub mod range;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;
use warp::reply::Response;
use warp::{Filter, Reply};

use self::range::{ByteRange, RangeRequest};
use crate::cache::body::{self, Part};
use crate::cache::catalog::{Catalog, Opened};
use crate::cache::media::Media;
use crate::upstream::{self, Head, UpstreamError};
use crate::Shared;

pub fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    let stream = warp::path!("stream")
        .and(with.clone())
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .then(handle_stream);
    let live = warp::path!("health" / "live").map(|| text(StatusCode::OK, "ok"));
    let ready = warp::path!("health" / "ready")
        .and(with.clone())
        .then(ready);
    let metrics = warp::path!("metrics").and(with).map(|s: Arc<Shared>| {
        let mut r = Response::new(Bytes::from(s.metrics.encode()).into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    });
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
pub fn text(status: StatusCode, reason: &str) -> Response {
    let mut r = Response::new(Bytes::from(format!("{reason}\n")).into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error(e: &UpstreamError) -> Response {
    text(e.status(), &e.to_string())
}

async fn ready(shared: Arc<Shared>) -> Response {
    let index_ok = shared
        .index
        .call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
        .await
        .is_ok();
    let dir_ok = shared.cfg.cache_dir.is_dir();
    // spool serves while the disk is full or caching is paused (streams go
    // on uncached), so those are reported but do not make it unready.
    let ok = index_ok && dir_ok;
    let space = shared.disk_space();
    let mut reasons = Vec::new();
    if !index_ok {
        reasons.push("index unavailable");
    }
    if !dir_ok {
        reasons.push("cache directory missing");
    }
    let body = serde_json::json!({
        "ready": ok,
        "reasons": reasons,
        "index": if index_ok { "ok" } else { "unavailable" },
        "cache_dir": if dir_ok { "ok" } else { "missing" },
        "disk": {
            "level": shared.disk_level().map(|l| l.as_str()),
            "free_bytes": space.map(|s| s.free_bytes),
            "total_bytes": space.map(|s| s.total_bytes),
        },
        "caching": shared.guard.mode().describe(),
        "memory_cache_bytes": shared.memcache.bytes(),
    });
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

async fn handle_stream(
    shared: Arc<Shared>,
    method: Method,
    query: String,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    shared.metrics.client_requests.inc();
    let Some(raw) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing url: use /stream?url=<percent-encoded http(s) URL>",
        );
    };
    let url = match upstream::parse_url(&raw) {
        Ok(u) => u,
        Err(e) => return error(&e),
    };
    // A media open in this process was checked when it was opened; others
    // are checked before anything else happens.
    if !shared.catalog.contains(url.as_str()) {
        if let Err(e) = shared.upstream.check(&url).await {
            return error(&e);
        }
    }
    let range_header = header_str(&headers, header::RANGE);
    let start = match range_header {
        Some(h) => range::first_span(h),
        None => Some((0, None)),
    };
    // HEAD needs no bytes: probe with one instead of starting a download.
    let start = if method == Method::HEAD { None } else { start };
    match Catalog::open(&shared, &url, start).await {
        Err(e) => error(&e),
        Ok(Opened::Media(media)) => respond(shared, media, &method, &headers),
        Ok(Opened::Passthrough(p)) => passthrough(&method, p.0, &p.1),
        Ok(Opened::Unsized) => {
            shared.metrics.upstream_requests.inc();
            match shared.upstream.get_raw(&url, range_header).await {
                Ok(resp) => match Head::parse(resp.status(), resp.headers()) {
                    Ok(head) => passthrough(&method, resp, &head),
                    Err(e) => error(&e),
                },
                Err(e) => error(&e),
            }
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds the response for a media of known size (RFC 9110 §13, §14).
fn respond(shared: Arc<Shared>, media: Arc<Media>, method: &Method, req: &HeaderMap) -> Response {
    let size = media.size();
    let row = &media.row;
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_type = row
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let validators = [
        (header::ETAG, row.etag.as_deref()),
        (header::LAST_MODIFIED, row.last_modified.as_deref()),
    ];
    for (name, value) in validators {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    // §13.1.2: If-None-Match uses the weak comparison.
    if let Some(inm) = header_str(req, header::IF_NONE_MATCH) {
        if none_match_hits(inm, row.etag.as_deref()) {
            return reply(StatusCode::NOT_MODIFIED, h, None);
        }
    }
    let ranges = match header_str(req, header::RANGE) {
        Some(r) if if_range_holds(req, &media) => range::parse(r, size),
        _ => RangeRequest::Ignore,
    };
    let full = ByteRange {
        start: 0,
        end: size.saturating_sub(1),
    };
    let (status, parts, length) = match &ranges {
        RangeRequest::Unsatisfiable => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            r.headers_mut().extend(h);
            return r;
        }
        RangeRequest::Ignore => {
            h.insert(header::CONTENT_TYPE, value(content_type));
            let parts = if size == 0 {
                vec![]
            } else {
                vec![Part::Range(full)]
            };
            (StatusCode::OK, parts, size)
        }
        RangeRequest::Ranges(v) if v.len() == 1 => {
            let r = v[0];
            h.insert(header::CONTENT_TYPE, value(content_type));
            h.insert(header::CONTENT_RANGE, value(&r.content_range(size)));
            (StatusCode::PARTIAL_CONTENT, vec![Part::Range(r)], r.len())
        }
        RangeRequest::Ranges(v) => {
            let (ctype, parts, length) = multipart(v, content_type, size);
            h.insert(header::CONTENT_TYPE, value(&ctype));
            (StatusCode::PARTIAL_CONTENT, parts, length)
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if *method == Method::HEAD || parts.is_empty() {
        return reply(status, h, None);
    }
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(body::produce(shared, media, parts, tx));
    reply(status, h, Some(rx))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// `multipart/byteranges` framing (RFC 9110 §14.6): its content type, the
/// parts to send, and the exact total length.
fn multipart(ranges: &[ByteRange], content_type: &str, size: u64) -> (String, Vec<Part>, u64) {
    let boundary = format!("spool-{:016x}", rand::random::<u64>());
    let mut parts = Vec::new();
    let mut length = 0u64;
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(size)
        );
        length += head.len() as u64 + r.len();
        parts.push(Part::Literal(Bytes::from(head)));
        parts.push(Part::Range(*r));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    length += tail.len() as u64;
    parts.push(Part::Literal(Bytes::from(tail)));
    (
        format!("multipart/byteranges; boundary={boundary}"),
        parts,
        length,
    )
}

/// If-None-Match: true when any listed tag matches (weak comparison).
fn none_match_hits(header: &str, etag: Option<&str>) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(etag) = etag else { return false };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.split(',').any(|t| opaque(t) == opaque(etag))
}

/// If-Range (§13.1.5): the range applies only when the validator matches
/// strongly: the same strong ETag, or exactly the Last-Modified date.
fn if_range_holds(req: &HeaderMap, media: &Media) -> bool {
    let Some(v) = header_str(req, header::IF_RANGE).map(str::trim) else {
        return true;
    };
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/")
            && media
                .row
                .etag
                .as_deref()
                .is_some_and(|e| !e.starts_with("W/") && e == v);
    }
    match (
        httpdate::parse_http_date(v),
        media
            .row
            .last_modified
            .as_deref()
            .map(httpdate::parse_http_date),
    ) {
        (Ok(a), Some(Ok(b))) => a == b,
        _ => false,
    }
}

fn reply(
    status: StatusCode,
    headers: HeaderMap,
    body: Option<mpsc::Receiver<Result<Bytes, std::io::Error>>>,
) -> Response {
    let mut r = match body {
        Some(rx) => warp::reply::stream(ReceiverStream(rx)).into_response(),
        None => Response::new(Bytes::new().into()),
    };
    *r.status_mut() = status;
    r.headers_mut().extend(headers);
    r
}

/// Relays an origin response that spool cannot cache (no size known).
fn passthrough(method: &Method, resp: reqwest::Response, head: &Head) -> Response {
    let mut h = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = resp.headers().get(&name) {
            h.insert(name, v.clone());
        }
    }
    if *method == Method::HEAD {
        return reply(head.status, h, None);
    }
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(b)) => {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    reply(head.status, h, Some(rx))
}

/// A `Stream` over an mpsc receiver (what tokio-stream's wrapper does),
/// kept here to avoid a dependency for twenty lines.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;

    pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        assert!(none_match_hits("\"a\"", Some("\"a\"")));
        assert!(none_match_hits("W/\"a\"", Some("\"a\"")));
        assert!(none_match_hits("\"b\", \"a\"", Some("W/\"a\"")));
        assert!(none_match_hits("*", None));
        assert!(!none_match_hits("\"b\"", Some("\"a\"")));
        assert!(!none_match_hits("\"a\"", None));
    }

    #[test]
    fn multipart_length_is_exact() {
        let ranges = [
            ByteRange { start: 0, end: 9 },
            ByteRange { start: 20, end: 24 },
        ];
        let (ctype, parts, length) = multipart(&ranges, "video/mp4", 100);
        assert!(ctype.starts_with("multipart/byteranges; boundary=spool-"));
        let total: u64 = parts
            .iter()
            .map(|p| match p {
                Part::Literal(b) => b.len() as u64,
                Part::Range(r) => r.len(),
            })
            .sum();
        assert_eq!(total, length);
        assert_eq!(parts.len(), 5);
    }
}
