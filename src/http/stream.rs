//! `GET|HEAD /stream?url=…`, `/p/…` and `/s/…`: the media through the
//! cache, with the headers of RFC 9110 (§13 conditional requests, §14
//! ranges); playlists and manifests through `playlist.rs`.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::reply::Response;
use warp::Reply;

use super::access::Access;
use super::conditional::{if_range_holds, none_match_hits};
use super::error::{error, text};
use super::links::{self, Links};
use super::multipart::{multipart, span};
use super::playlist::{self, Answers};
use super::range::{self, ByteRange, RangeRequest};
use crate::cache::body::{BodyPart, Piece, Player};
use crate::cache::media::Media;
use crate::cache::{Cache, CacheError, Opened};
use crate::manifest;
use crate::signing::Scope;
use crate::store::outbox::Outbox;
use crate::upstream::{self, Head, UpstreamRule};

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Ranges in one `Range` header; more are ignored (whole body).
    pub max_ranges: usize,
}

/// `/stream?url=…`: an unsigned link. Every answer carries the CORS
/// headers.
pub(crate) async fn handle(
    (cache, limits, playlists, client): (Cache, Limits, Arc<Answers>, Player),
    access: Arc<Access>,
    method: Method,
    query: String,
    headers: HeaderMap,
) -> Response {
    let r = unsigned(
        (cache, limits, playlists, client),
        &access,
        method,
        query,
        headers,
    )
    .await;
    access.cors_unsigned(r)
}

async fn unsigned(
    (cache, limits, playlists, client): (Cache, Limits, Arc<Answers>, Player),
    access: &Access,
    method: Method,
    query: String,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = not_a_media_request(&method, access) {
        return r;
    }
    cache.metrics().client_requests.inc();
    if let Err(reason) = access.unsigned_host(&headers) {
        return text(StatusCode::MISDIRECTED_REQUEST, &reason);
    }
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
    if let Err(reason) = access.unsigned(&url) {
        return text(StatusCode::FORBIDDEN, &reason);
    }
    let links = Links::Unsigned;
    let rule = UpstreamRule::unsigned(access.restricted);
    serve(
        cache, limits, &playlists, &links, &rule, method, url, headers, client,
    )
    .await
}

/// `/p/<encoded upstream origin or directory>/<path>`: the path form of
/// an unsigned link, with the same rules. Every answer carries the CORS
/// headers where unsigned links do.
pub(crate) async fn path_form(
    tail: String,
    query: Option<String>,
    (cache, limits, playlists, client): (Cache, Limits, Arc<Answers>, Player),
    access: Arc<Access>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        if let Some(r) = not_a_media_request(&method, &access) {
            return r;
        }
        cache.metrics().client_requests.inc();
        if let Err(reason) = access.unsigned_host(&headers) {
            return text(StatusCode::MISDIRECTED_REQUEST, &reason);
        }
        let url = match links::parse_path_form(&tail, query.as_deref()) {
            Ok(u) => u,
            Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
        };
        if let Err(reason) = access.unsigned(&url) {
            return text(StatusCode::FORBIDDEN, &reason);
        }
        let links = Links::Unsigned;
        let rule = UpstreamRule::unsigned(access.restricted);
        serve(
            cache, limits, &playlists, &links, &rule, method, url, headers, client,
        )
        .await
    }
    .await;
    access.cors_unsigned(r)
}

/// `/s/<token>/<name>`: a signed link. For a file token the name is for
/// players (titles, type sniffing) and the token alone names the
/// upstream; for a directory token the path after it names a file below
/// the signed directory. Every answer carries the CORS headers.
pub(crate) async fn signed(
    // A client's query is never forwarded on a signed link: the token
    // names the upstream URL, query included.
    (token, tail, _query): (String, String, Option<String>),
    (cache, limits, playlists, client): (Cache, Limits, Arc<Answers>, Player),
    access: Arc<Access>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        if let Some(r) = not_a_media_request(&method, &access) {
            return r;
        }
        cache.metrics().client_requests.inc();
        if token == links::UNCOVERED_TOKEN {
            return text(StatusCode::FORBIDDEN, links::NOT_COVERED);
        }
        let (grant, key) = match access.open(&token) {
            Ok(g) => g,
            Err(reason) => return text(StatusCode::FORBIDDEN, &reason),
        };
        let granted = match upstream::parse_url(&grant.url) {
            Ok(u) => u,
            Err(e) => return hide_upstream(error(&e)),
        };
        let (url, rule) = match grant.scope {
            Scope::File => (granted.clone(), UpstreamRule::signed()),
            Scope::Dir => match links::parse_signed_dir(&grant.url, &tail) {
                Ok(u) => (u, UpstreamRule::below(granted.clone())),
                Err(reason) => return text(StatusCode::BAD_REQUEST, &reason),
            },
        };
        let links = Links::Signed {
            key,
            token,
            granted,
            dir: grant.scope == Scope::Dir,
            expires: grant.expires,
            credentialed: access.credentialed.clone(),
            allow: access.allow.clone(),
        };
        hide_upstream(
            serve(
                cache, limits, &playlists, &links, &rule, method, url, headers, client,
            )
            .await,
        )
    }
    .await;
    access.cors(r)
}

/// A signed link hides its upstream, so the error answers of its media
/// name no host, address or Location: only the status and why in general
/// terms. Range answers (416) say nothing of the upstream and stay.
fn hide_upstream(r: Response) -> Response {
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error())
        || matches!(
            status,
            StatusCode::RANGE_NOT_SATISFIABLE | StatusCode::METHOD_NOT_ALLOWED
        )
    {
        return r;
    }
    let reason = match status {
        StatusCode::BAD_GATEWAY => "the upstream failed or could not be reached",
        StatusCode::GATEWAY_TIMEOUT => "the upstream did not answer in time",
        StatusCode::SERVICE_UNAVAILABLE => return r,
        s => s.canonical_reason().unwrap_or("error"),
    };
    let mut out = text(status, reason);
    if let Some(v) = r.headers().get(header::RETRY_AFTER) {
        out.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    out
}

/// The answer to a preflight or a method other than GET and HEAD.
fn not_a_media_request(method: &Method, access: &Access) -> Option<Response> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    if method == Method::OPTIONS {
        return Some(access.preflight());
    }
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET, HEAD and OPTIONS");
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    Some(r)
}

/// The media at `url`, through the cache, its fetches held to `rule`; a
/// playlist or manifest with its URIs spelled by `links`.
#[allow(clippy::too_many_arguments)]
async fn serve(
    cache: Cache,
    limits: Limits,
    playlists: &Answers,
    links: &Links,
    rule: &UpstreamRule,
    method: Method,
    url: url::Url,
    headers: HeaderMap,
    client: Player,
) -> Response {
    if let Err(e) = cache.check(&url).await {
        return error(&e);
    }
    if manifest::named(&url) {
        return playlist::answer(playlists, &url, rule, links, &method).await;
    }
    let range_header = header_str(&headers, header::RANGE);
    let start = match range_header {
        Some(h) => range::first_span(h),
        None => Some((0, None)),
    };
    // HEAD needs no bytes: probe with one instead of starting a download.
    let start = if method == Method::HEAD { None } else { start };
    // Playlists the origin names only by their Content-Type.
    let typed =
        |h: &HeaderMap| manifest::typed(h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    match cache.open(&url, rule, start).await {
        Err(e) => error(&e),
        Ok(Opened::Media(media)) if manifest::typed(media.row.content_type.as_deref()) => {
            playlist::answer(playlists, &url, rule, links, &method).await
        }
        Ok(Opened::Media(media)) => respond(cache, limits, media, &method, &headers, client),
        Ok(Opened::Passthrough(p)) if typed(p.0.headers()) => {
            playlist::answer(playlists, &url, rule, links, &method).await
        }
        Ok(Opened::Passthrough(p)) => passthrough(&cache, &method, p.0, &p.1),
        Ok(Opened::Unsized) => match cache.relay(&url, rule, range_header).await {
            Ok(resp) if typed(resp.headers()) => {
                playlist::answer(playlists, &url, rule, links, &method).await
            }
            Ok(resp) => match resp.head() {
                Ok(head) => passthrough(&cache, &method, resp, &head),
                Err(e) => error(&e),
            },
            Err(e) => error(&e),
        },
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds the response for a media of known size (RFC 9110 §13, §14).
fn respond(
    cache: Cache,
    limits: Limits,
    media: Arc<Media>,
    method: &Method,
    req: &HeaderMap,
    client: Player,
) -> Response {
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
        // The bytes are the origin's: an encoding it applied anyway is
        // named, or players would decode gzip as video.
        (header::CONTENT_ENCODING, row.content_encoding.as_deref()),
    ];
    for (name, value) in validators {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    if let Some(inm) = header_str(req, header::IF_NONE_MATCH) {
        if none_match_hits(inm, row.etag.as_deref()) {
            return reply(StatusCode::NOT_MODIFIED, h, None);
        }
    }
    let if_range = header_str(req, header::IF_RANGE);
    let ranges = match header_str(req, header::RANGE) {
        Some(r) if if_range_holds(if_range, row.etag.as_deref(), row.last_modified.as_deref()) => {
            range::parse(r, size, limits.max_ranges)
        }
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
                vec![BodyPart::Range(span(&full))]
            };
            (StatusCode::OK, parts, size)
        }
        RangeRequest::Ranges(v) if v.len() == 1 => {
            let r = v[0];
            h.insert(header::CONTENT_TYPE, value(content_type));
            h.insert(header::CONTENT_RANGE, value(&r.content_range(size)));
            (
                StatusCode::PARTIAL_CONTENT,
                vec![BodyPart::Range(span(&r))],
                r.len(),
            )
        }
        RangeRequest::Ranges(v) => {
            let (ctype, parts, length) = multipart(v, content_type, size);
            h.insert(header::CONTENT_TYPE, value(&ctype));
            (StatusCode::PARTIAL_CONTENT, parts, length)
        }
    };
    for part in &parts {
        if let BodyPart::Range(r) = part {
            if let Err(e) = cache.reachable(&media, r.start) {
                return error(&e);
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if *method == Method::HEAD || parts.is_empty() {
        return reply(status, h, None);
    }
    let permit = match cache.stream_permit() {
        Some(p) => p,
        None => return too_many_streams(),
    };
    let (tx, rx) = mpsc::channel(2);
    let tasks = cache.tasks().clone();
    let outbox = client.outbox.clone();
    tasks.spawn(async move {
        cache.produce(media, parts, tx, client).await;
        drop(permit);
    });
    reply(status, h, Some((rx, outbox)))
}

/// 503 for a stream past `--max-streams`.
fn too_many_streams() -> Response {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many streams; try again",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// A response body's pieces, and where its connection takes file pieces.
type Body = (mpsc::Receiver<Result<Piece, CacheError>>, Option<Outbox>);

fn reply(status: StatusCode, headers: HeaderMap, body: Option<Body>) -> Response {
    let mut r = match body {
        // A body error cuts the response: the player sees it incomplete.
        Some((rx, outbox)) => warp::reply::stream(ReceiverStream::new(rx).map(move |r| match r {
            Ok(Piece::Bytes(b)) => Ok(b),
            // Queued as it is yielded, so that the connection meets
            // the pieces in the order hyper writes their stand-ins.
            Ok(Piece::File(f)) => {
                outbox.as_ref().and_then(|o| o.stand_in(f)).ok_or_else(|| {
                    std::io::Error::other("a file piece this connection cannot send")
                })
            }
            Err(e) => Err(std::io::Error::other(e)),
        }))
        .into_response(),
        None => Response::new(Bytes::new().into()),
    };
    *r.status_mut() = status;
    r.headers_mut().extend(headers);
    r
}

/// Relays an origin response that spool cannot cache (no size known),
/// held to the limits of any stream: a `--max-streams` permit, the
/// upstream timeout for each piece, `--write-timeout` for each send.
fn passthrough(cache: &Cache, method: &Method, resp: upstream::Answer, head: &Head) -> Response {
    let mut h = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
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
    let Some(permit) = cache.stream_permit() else {
        return too_many_streams();
    };
    let (tx, rx) = mpsc::channel(2);
    let write_timeout = cache.write_timeout();
    cache.tasks().spawn(async move {
        let _permit = permit;
        let mut resp = resp;
        loop {
            let piece = match resp.next_piece().await {
                Ok(Some(b)) => Ok(Piece::Bytes(b)),
                Ok(None) => return,
                Err(e) => Err(CacheError::from(e)),
            };
            let failed = piece.is_err();
            let sent = tokio::time::timeout(write_timeout, tx.send(piece)).await;
            if !matches!(sent, Ok(Ok(()))) || failed {
                return;
            }
        }
    });
    reply(head.status, h, Some((rx, None)))
}
