//! The control plane (`--admin-listen`): the status page at `/`, the admin
//! API under `/api/`, `/metrics`, `POST /sign` (`sign.rs`), and
//! `/health/live` and `/health/ready` with details for admins.
//!
//! Every request first passes the Host and Origin checks of `control.rs`;
//! everything but the status page, the health answers and the page's own
//! static content needs the admin right. JSON in and out; errors are
//! `{"error": "..."}` with a 4xx status that says what was wrong. A `POST`
//! must say `Content-Type: application/json`, even with an empty body: a
//! web page cannot send that across origins without a preflight spool
//! never grants.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/status` | cache size, disk, caching state, streams, prefetch jobs |
//! | `GET /api/traffic` | bytes served from the cache, memory and the origin in each of the last 60 minutes |
//! | `GET /api/titles` | titles and lone files, a page: `q`, `sort` (recent, size, cached, url), `offset`, `limit` |
//! | `GET /api/titles/{id}` | one title and a page of its parts (`offset`, `limit`) |
//! | `POST /api/titles/{id}/pin`, `.../unpin` | pin a title: never evicted by size or age |
//! | `POST /api/pin`, `POST /api/unpin` | `{"url": "..."}`: the same for the title a URL belongs to (a cached file becomes one) |
//! | `GET /api/media` | every media version, with how much is cached |
//! | `GET /api/media/{id}` | one media and its chunk map (run-length) |
//! | `DELETE /api/media/{id}` | drop one media's cache |
//! | `POST /api/media/{id}/pin`, `.../unpin` | pin the title a media belongs to (a file no playlist names becomes one) |
//! | `POST /api/prefetch` | `{"url": "...", "variant": "best"}`: warm a media, or a title's chosen renditions (`best`, `worst`, `all`, a bandwidth); returns its job |
//! | `GET /api/prefetch`, `GET /api/prefetch/{job}` | jobs and their progress |
//! | `DELETE /api/prefetch/{job}` | stop a job (what it fetched stays) |
//! | `POST /api/caching/pause`, `POST /api/caching/resume` | stop and restart cache writes (a resume writes what was kept in memory) |

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::Stream;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use super::access::Access;
use super::body::read_limited;
use super::control::{Control, Peer};
use super::error::{json, json_error as error, method_not_allowed};
use super::health::{self, Readiness};
use super::prefetch;
use super::sign::{sign, SIGN_BODY};
use super::titles;
use crate::cache::prefetch::Prefetches;
use crate::cache::Cache;
use crate::disk::Breaker;
use crate::metrics::Metrics;
use crate::store::summary;
use crate::store::MediaId;

/// The status page: one file, its CSS and script inline.
const STATUS_PAGE: &str = include_str!("status.html");

/// Largest request body the API reads.
const MAX_BODY: usize = 16 * 1024;

/// What the admin endpoints work with. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Admin {
    cache: Cache,
    /// What readiness looks at; the status shows the same disk and memory.
    readiness: Readiness,
    /// Caching is paused and resumed here.
    breaker: Breaker,
    metrics: Arc<Metrics>,
    /// For `POST /sign`: the key and the media listener's public URL.
    access: Access,
    control: Control,
    prefetches: Prefetches,
}

/// A refused request: its status and why.
struct Refusal(StatusCode, String);

impl Refusal {
    fn response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// The status page (no data in it: it asks the API, with the token the
/// user gives it).
fn status_page() -> Response {
    let mut r = Response::new(Bytes::from_static(STATUS_PAGE.as_bytes()).into());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only its own inline script and style, and requests to this origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The answer to a request without the admin right.
fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "admin endpoint: send Authorization: Bearer <SPOOL_ADMIN_TOKEN> (or ask from loopback \
         when the control plane listens on loopback)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"spool\""),
    );
    r
}

/// A media id or job id from the path.
fn id_of(s: &str, what: &str) -> Result<u64, Refusal> {
    s.parse::<u64>()
        .ok()
        .filter(|&i| i > 0 && i <= i64::MAX as u64)
        .ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("{what} must be a positive integer, not {s:?}"),
            )
        })
}

impl Admin {
    pub fn new(
        cache: Cache,
        readiness: Readiness,
        metrics: Arc<Metrics>,
        access: Access,
        control: Control,
        prefetches: Prefetches,
    ) -> Admin {
        Admin {
            prefetches,
            cache,
            breaker: readiness.breaker.clone(),
            readiness,
            metrics,
            access,
            control,
        }
    }

    /// Answers one request to the control plane.
    pub async fn serve<S, B>(
        self,
        (path, query): (String, String),
        method: Method,
        peer: Option<Peer>,
        headers: HeaderMap,
        body: S,
    ) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        if let Err(why) = self.control.guard(&method, &headers) {
            return error(StatusCode::FORBIDDEN, &why.to_string());
        }
        let admin = self.control.admin(peer, &headers);
        let read = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/" if read => status_page(),
            "/health/live" if read => json(StatusCode::OK, &serde_json::json!({ "live": true })),
            "/health/ready" if read => health::ready(self.readiness.clone(), admin).await,
            "/metrics" if read && admin => {
                health::metrics(&self.metrics, &self.breaker, &self.readiness.memcache)
            }
            "/sign" if method == Method::POST && admin => {
                if let Err(r) = json_content_type(&headers) {
                    return r.response();
                }
                match read_body(body, SIGN_BODY).await {
                    Ok(b) => sign(&self.access, &b),
                    Err(r) => r.response(),
                }
            }
            "/metrics" if read => unauthorized(),
            "/sign" if method == Method::POST => unauthorized(),
            "/" | "/health/live" | "/health/ready" | "/metrics" => method_not_allowed("GET, HEAD"),
            "/sign" => method_not_allowed("POST"),
            p => match p.strip_prefix("/api/") {
                Some(tail) => {
                    self.handle((tail.to_owned(), query), method, admin, headers, body)
                        .await
                }
                None => error(StatusCode::NOT_FOUND, "no such endpoint"),
            },
        }
    }

    /// Answers one `/api/<tail>` request.
    async fn handle<S, B>(
        self,
        (tail, query): (String, String),
        method: Method,
        admin: bool,
        headers: HeaderMap,
        body: S,
    ) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        if !admin {
            return unauthorized();
        }
        if method == Method::POST {
            if let Err(r) = json_content_type(&headers) {
                return r.response();
            }
        }
        let path: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
        let m = &method;
        match path.as_slice() {
            ["status"] if m == Method::GET => self.status().await,
            ["status"] => method_not_allowed("GET"),
            ["traffic"] if m == Method::GET => json(
                StatusCode::OK,
                &serde_json::json!({
                    "minutes": self.metrics.traffic.last_hour(crate::store::unix_now())
                }),
            ),
            ["traffic"] => method_not_allowed("GET"),
            // Without paging parameters, every media (as before paging).
            ["media"] if m == Method::GET => match titles::page_query(&query, true) {
                Ok((_, false)) => self.media_list().await,
                Ok((q, true)) => self.media_page(q).await,
                Err(why) => error(StatusCode::BAD_REQUEST, &why),
            },
            ["media"] => method_not_allowed("GET"),
            ["media", id] => match id_of(id, "a media id") {
                Err(r) => r.response(),
                Ok(id) if m == Method::GET => self.media(MediaId(id as i64)).await,
                Ok(id) if m == Method::DELETE => self.delete(MediaId(id as i64)).await,
                Ok(_) => method_not_allowed("GET, DELETE"),
            },
            ["media", id, action @ ("pin" | "unpin")] => match id_of(id, "a media id") {
                Err(r) => r.response(),
                Ok(id) if m == Method::POST => {
                    titles::pin_media(&self.cache, id as i64, action == &"pin").await
                }
                Ok(_) => method_not_allowed("POST"),
            },
            ["prefetch"] if m == Method::POST => match read_body(body, MAX_BODY).await {
                Ok(b) => prefetch::start(&self.prefetches, &self.cache, &self.breaker, &b).await,
                Err(r) => r.response(),
            },
            ["prefetch"] if m == Method::GET => json(
                StatusCode::OK,
                &serde_json::json!({ "jobs": self.prefetches.list() }),
            ),
            ["prefetch"] => method_not_allowed("GET, POST"),
            ["prefetch", id] => match id_of(id, "a job id") {
                Err(r) => r.response(),
                Ok(id) => prefetch::job(&self.prefetches, id, m),
            },
            ["titles"] if m == Method::GET => match titles::page_query(&query, true) {
                Ok((q, _)) => titles::page(&self.cache, q).await,
                Err(why) => error(StatusCode::BAD_REQUEST, &why),
            },
            ["titles"] => method_not_allowed("GET"),
            ["titles", id] => match (id_of(id, "a title id"), titles::page_query(&query, false)) {
                (Err(r), _) => r.response(),
                (_, Err(why)) => error(StatusCode::BAD_REQUEST, &why),
                (Ok(id), Ok((q, _))) if m == Method::GET => {
                    titles::one(&self.cache, id as i64, q).await
                }
                (Ok(_), Ok(_)) => method_not_allowed("GET"),
            },
            ["titles", id, action @ ("pin" | "unpin")] => match id_of(id, "a title id") {
                Err(r) => r.response(),
                Ok(id) if m == Method::POST => {
                    titles::pin_id(&self.cache, id as i64, action == &"pin").await
                }
                Ok(_) => method_not_allowed("POST"),
            },
            [action @ ("pin" | "unpin")] if m == Method::POST => {
                match read_body(body, MAX_BODY).await {
                    Ok(b) => titles::pin_url(&self.cache, &b, action == &"pin").await,
                    Err(r) => r.response(),
                }
            }
            ["pin" | "unpin"] => method_not_allowed("POST"),
            ["caching", action @ ("pause" | "resume")] if m == Method::POST => {
                self.caching(action == &"pause")
            }
            ["caching", "pause" | "resume"] => method_not_allowed("POST"),
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    async fn status(&self) -> Response {
        let totals = self.cache.inventory().totals().await.ok();
        let last = self.readiness.disk.last();
        let mode = self.breaker.mode();
        let jobs: Vec<_> = self
            .prefetches
            .list()
            .into_iter()
            .filter(|j| {
                matches!(
                    j.state,
                    crate::cache::prefetch::Phase::Starting
                        | crate::cache::prefetch::Phase::Running
                )
            })
            .collect();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "cache": {
                    "bytes": totals.map(|t| t.2),
                    "media": totals.map(|t| t.0),
                    "chunks": totals.map(|t| t.1),
                    "memory_bytes": self.readiness.memcache.bytes(),
                },
                "disk": {
                    "level": last.map(|l| l.1.as_str()),
                    "free_bytes": last.map(|l| l.0.free_bytes),
                    "total_bytes": last.map(|l| l.0.total_bytes),
                },
                "caching": {
                    "state": super::health::caching_state(mode),
                    "writing": self.breaker.is_writing(),
                    "paused_by_admin": mode == crate::disk::breaker::Mode::Held,
                },
                "streams": self.cache.inventory().streams(),
                "prefetch": jobs,
            }),
        )
    }

    async fn media_list(&self) -> Response {
        match self.cache.inventory().media_list().await {
            Ok(list) => json(StatusCode::OK, &serde_json::json!({ "media": list })),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    async fn media_page(&self, q: summary::PageQuery) -> Response {
        let (offset, limit) = (q.offset, q.limit);
        match self.cache.inventory().media_page(q).await {
            Ok((page, total)) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "media": page,
                    "total": total,
                    "offset": offset,
                    "limit": limit,
                }),
            ),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    async fn media(&self, id: MediaId) -> Response {
        match self.cache.inventory().chunk_map(id).await {
            Ok(Some(map)) => json(StatusCode::OK, &map),
            Ok(None) => error(StatusCode::NOT_FOUND, &format!("no media {id}")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    async fn delete(&self, id: MediaId) -> Response {
        match self.cache.inventory().delete_media(id).await {
            Ok(Some(d)) => {
                // Its prefetch and fill jobs stop: a held fill would fetch
                // it all again once there is room.
                let jobs = self.prefetches.cancel_media(id.0, &d.url);
                let v = serde_json::json!({ "deleted": d, "jobs_stopped": jobs });
                json(StatusCode::OK, &v)
            }
            Ok(None) => error(StatusCode::NOT_FOUND, &format!("no media {id}")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    fn caching(&self, pause: bool) -> Response {
        let b = &self.breaker;
        // The disk layer holds caching paused; who asked is this layer's.
        let changed = if pause { b.hold() } else { b.release() };
        tracing::info!(paused = pause, changed, "caching pause asked by an admin");
        // What streams kept in memory meanwhile is written now.
        let written = match pause {
            true => 0,
            false => self.cache.write_kept(),
        };
        json(
            StatusCode::OK,
            &serde_json::json!({
                "changed": changed,
                "kept_chunks_writing": written,
                "caching": super::health::caching_state(b.mode()),
                "writing": b.is_writing(),
            }),
        )
    }
}

/// Only `application/json` (with parameters, if any) is taken.
fn json_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Refusal(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send Content-Type: application/json (also with an empty body)".into(),
    ))
}

/// The request body, at most `limit` bytes (413 past it).
async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, Refusal>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    read_limited(body, limit)
        .await
        .map_err(|(status, why)| Refusal(status, why))
}
