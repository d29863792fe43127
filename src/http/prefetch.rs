//! The admin API's prefetch jobs: `POST /api/prefetch` starts one (a
//! media, or a title's chosen renditions), `GET` and `DELETE
//! /api/prefetch/{id}` follow and stop one. The work is the cache's
//! (`cache/prefetch.rs`).

use http::{header, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use super::error::{json, json_error as error, method_not_allowed, status_of};
use crate::cache::prefetch::{Prefetches, Refused};
use crate::cache::Cache;
use crate::disk::Breaker;

/// `{"url": "..."}`. The URL is held to the rules of a signed link (an
/// admin may sign any link): private and local addresses only when
/// `--allow-upstream` names them, checked on the resolved address.
pub(super) async fn start(
    prefetches: &Prefetches,
    cache: &Cache,
    breaker: &Breaker,
    body: &[u8],
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        url: String,
        /// For a playlist or manifest: best, worst, all, a bandwidth.
        #[serde(default)]
        variant: Option<String>,
    }
    let req: Req = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("send {{\"url\": \"http(s)://...\", \"variant\": \"best\"}}: {e}"),
            )
        }
    };
    let url = match crate::upstream::parse_url(&req.url) {
        Ok(u) => u,
        Err(e) => return error(status_of(&e), &e.to_string()),
    };
    let variant = match req
        .variant
        .as_deref()
        .unwrap_or("best")
        .parse::<crate::manifest::Variant>()
    {
        Ok(v) => v,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if let Err(e) = cache.check(&url).await {
        return error(status_of(&e), &e.to_string());
    }
    if !breaker.is_writing() {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "caching is {}: a prefetch would keep nothing",
                super::health::caching_state(breaker.mode())
            ),
        );
    }
    match prefetches.start(url, variant) {
        Ok((job, new)) => {
            let status = if new {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            let mut r = json(status, &job.view());
            if let Ok(v) = HeaderValue::from_str(&format!("/api/prefetch/{}", job.id())) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e @ Refused::Busy(_)) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// `GET` or `DELETE /api/prefetch/{id}`.
pub(super) fn job(prefetches: &Prefetches, id: u64, method: &Method) -> Response {
    let Some(job) = prefetches.get(id) else {
        return error(StatusCode::NOT_FOUND, &format!("no prefetch job {id}"));
    };
    match *method {
        Method::GET => json(StatusCode::OK, &job.view()),
        Method::DELETE => match prefetches.cancel(&job) {
            true => json(StatusCode::OK, &job.view()),
            false => error(StatusCode::CONFLICT, "this prefetch job has ended already"),
        },
        _ => method_not_allowed("GET, DELETE"),
    }
}
