//! Every route spool serves.

use std::convert::Infallible;

use http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::access::{self, Access, Peer};
use super::admin::{self, Admin};
use super::body::read_limited;
use super::error::text;
use super::health::{self, Health};
use super::playlist::Playlists;
use super::stream::{self, Limits};
use crate::cache::Cache;

/// Largest `POST /sign` body read.
const SIGN_BODY: usize = 64 * 1024;

/// The routes, with the handles their handlers need.
pub(crate) fn routes(
    cache: Cache,
    health: Health,
    limits: Limits,
    access: Access,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let admin = Admin::new(cache.clone(), health.clone(), access.clone());
    let playlists = Playlists::default();
    let with_media = warp::any().map(move || (cache.clone(), limits, playlists.clone()));
    let with_health = warp::any().map(move || health.clone());
    let with_access = warp::any().map(move || access.clone());
    let peer = warp::ext::optional::<Peer>();
    let query = || {
        warp::query::raw()
            .map(Some)
            .or(warp::any().map(|| None))
            .unify()
    };
    let stream = warp::path!("stream")
        .and(with_media.clone())
        .and(with_access.clone())
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .then(stream::handle);
    // The path after the token: the players' file name, or a file below a
    // signed directory.
    let signed = warp::path("s")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(query())
        .map(|token, tail: warp::path::Tail, q| (token, tail.as_str().to_owned(), q))
        .and(with_media.clone())
        .and(with_access.clone())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .then(stream::signed);
    let path_form = warp::path("p")
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| tail.as_str().to_owned())
        .and(query())
        .and(with_media)
        .and(with_access.clone())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .then(stream::path_form);
    let sign = warp::path!("sign")
        .and(warp::post())
        .and(with_access.clone())
        .and(peer)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            |access: Access, peer: Option<Peer>, headers: http::HeaderMap, body| async move {
                match read_limited(body, SIGN_BODY).await {
                    Ok(body) => access::sign(access, peer, headers, body).await,
                    Err((status, why)) => text(status, &why),
                }
            },
        );
    let api = warp::path("api")
        .and(warp::path::tail())
        .and(warp::method())
        .and(peer)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |tail: warp::path::Tail, method, peer, headers, body| {
            admin
                .clone()
                .handle(tail.as_str().to_owned(), method, peer, headers, body)
        });
    let status_page = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .map(admin::status_page);
    let live = warp::path!("health" / "live").map(|| text(StatusCode::OK, "ok"));
    let ready = warp::path!("health" / "ready")
        .and(with_health.clone())
        .and(with_access.clone())
        .and(peer)
        .and(warp::header::headers_cloned())
        .then(
            |h: Health, access: Access, peer: Option<Peer>, headers: http::HeaderMap| {
                health::ready(h, access.admin(peer, &headers))
            },
        );
    let metrics = warp::path!("metrics")
        .and(with_health)
        .and(with_access)
        .and(peer)
        .and(warp::header::headers_cloned())
        .map(
            |h: Health, access: Access, peer: Option<Peer>, headers: http::HeaderMap| {
                if access.admin(peer, &headers) {
                    health::metrics(&h)
                } else {
                    access::forbidden()
                }
            },
        );
    stream
        .or(signed)
        .unify()
        .or(path_form)
        .unify()
        .or(sign)
        .unify()
        .or(live)
        .unify()
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(api)
        .unify()
        .or(status_page)
        .unify()
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::NOT_FOUND, "not found")) })
        .unify()
}
