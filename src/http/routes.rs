//! The routes of spool's two listeners: the media plane (`--listen`:
//! media and the plain health answers) and the control plane
//! (`--admin-listen`: status page, admin API, metrics, signing).

use std::convert::Infallible;
use std::sync::Arc;

use http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::access::Access;
use super::admin::Admin;
use super::control::Peer;
use super::error::text;
use super::health::{self, Readiness};
use super::inert::Inert;
use super::listener::Received;
use super::playlist::Answers;
use super::stream::{self, Limits};
use crate::cache::body::Player;
use crate::cache::Cache;
use crate::store::outbox::Outbox;

/// The media listener: `/stream`, `/p/`, `/s/`, `/health/live` and the
/// plain `/health/ready`; anything else is 404. Every answer is inert in
/// a browser (`inert.rs`).
pub(crate) fn media_routes(
    cache: Cache,
    readiness: Readiness,
    limits: Limits,
    access: Access,
    inert: Inert,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    // Playlists' URIs carry the public URL's path prefix, if any.
    let prefix = super::forwarded::prefix_of(&access.public_url);
    let playlists = Arc::new(Answers::new(cache.playlists().clone(), &prefix));
    // The player's address and when its request arrived go with what the
    // media handlers use: its title session is logged as one line
    // (`cache/sessions.rs`), its time to first byte measured.
    let with_media = warp::any()
        .map(move || (cache.clone(), limits, playlists.clone()))
        .and(warp::ext::optional::<Peer>())
        .and(warp::ext::optional::<Received>())
        .and(warp::ext::optional::<Outbox>())
        .map(
            |(c, l, p): (Cache, Limits, Arc<Answers>),
             peer: Option<Peer>,
             at: Option<Received>,
             outbox: Option<Outbox>| {
                let player = Player {
                    addr: peer.map(|p| p.addr),
                    since: at.map_or_else(std::time::Instant::now, |r| r.0),
                    outbox,
                };
                (c, l, p, player)
            },
        );
    let with_readiness = warp::any().map(move || readiness.clone());
    let access = Arc::new(access);
    let with_access = warp::any().map(move || access.clone());
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
        .and(with_access)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .then(stream::path_form);
    let live = warp::path!("health" / "live").map(|| text(StatusCode::OK, "ok"));
    // The details are the control plane's.
    let ready = warp::path!("health" / "ready")
        .and(with_readiness)
        .then(|r: Readiness| health::ready(r, false));
    stream
        .or(signed)
        .unify()
        .or(path_form)
        .unify()
        .or(live)
        .unify()
        .or(ready)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(text(
                StatusCode::NOT_FOUND,
                "not found (the status page, /api/, /metrics and /sign are on spool's \
                 control plane, --admin-listen)",
            ))
        })
        .unify()
        .map(move |r| inert.apply(r))
}

/// The control plane: every request passes the Host and Origin checks
/// (`control.rs`), then `Admin::serve` answers it.
pub(crate) fn admin_routes(
    admin: Admin,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::method())
        .and(warp::ext::optional::<Peer>())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |path: warp::path::FullPath, query: String, method, peer, headers, body| {
                let request = (path.as_str().to_owned(), query);
                admin.clone().serve(request, method, peer, headers, body)
            },
        )
        .recover(|_| async { Ok::<_, Infallible>(text(StatusCode::BAD_REQUEST, "bad request")) })
        .unify()
}
