//! Who may use spool: signed links, the unsigned-link rule, and the
//! admin endpoints.
//!
//! - With a key (`--secret`, `--secret-file`) or on an address beyond
//!   loopback, unsigned `/stream?url=` (and its path form `/p/`) is
//!   served only for upstreams that
//!   `--allow-upstream` names; anything else needs a signed link
//!   (`/s/<token>/<file name>`). On loopback without a key, as on a
//!   laptop, unsigned links are served as before (without CORS headers).
//!   Origins with credentials in the settings file need signed links.
//! - `/metrics`, the detailed `/health/ready`, `POST /sign` and the admin
//!   API (`/api/…`, `admin.rs`) answer anyone with `Authorization: Bearer <SPOOL_ADMIN_TOKEN>` (compared in
//!   constant time), and loopback clients when spool listens on loopback.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use subtle::ConstantTimeEq;
use url::Url;
use warp::reply::Response;

use super::error::text;
use crate::signing::{self, Expiry, Grant, Key, Scope};
use crate::upstream::allow::AllowList;

/// The client's address, put on every request by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// The access rules. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Access {
    pub key: Option<Key>,
    /// Unsigned links only for listed upstreams.
    pub restricted: bool,
    pub allow: Arc<AllowList>,
    /// Never empty (an empty token is no token).
    pub admin_token: Option<Arc<str>>,
    /// Loopback clients are admins only when spool listens on loopback:
    /// behind a port forwarder (rootless containers) or a proxy on the
    /// same host, every client arrives from loopback.
    pub trust_loopback: bool,
    /// Origins with request headers (credentials) from the settings file:
    /// only signed links may reach them.
    pub credentialed: Arc<Vec<url::Origin>>,
    pub public_url: Arc<str>,
    /// `Access-Control-Allow-Origin` for media, None for no CORS headers.
    pub cors_origin: Option<HeaderValue>,
}

impl Access {
    /// Adds the CORS headers a page on another origin needs to read media
    /// (`fetch()` with Range, `<video crossorigin>`, MSE players). spool
    /// uses no cookies, so `*` exposes nothing a plain request would not.
    pub fn cors(&self, r: Response) -> Response {
        self.cors_if(true, r)
    }

    /// CORS headers for an unsigned link: only where unsigned links are
    /// limited to the allowlist. An open spool on a laptop would otherwise
    /// let any web page read, through it, whatever it can reach.
    pub fn cors_unsigned(&self, r: Response) -> Response {
        self.cors_if(self.restricted, r)
    }

    fn cors_if(&self, on: bool, mut r: Response) -> Response {
        if let Some(origin) = self.cors_origin.as_ref().filter(|_| on) {
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(
                    "Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified, Content-Type, Content-Encoding",
                ),
            );
            if origin != "*" {
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        r
    }

    /// The answer to a CORS preflight (`OPTIONS`): 204 allowing the
    /// methods and request headers players send.
    pub fn preflight(&self) -> Response {
        let mut r = Response::new(Bytes::new().into());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        if self.cors_origin.is_some() {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "Range, If-Range, If-None-Match, If-Modified-Since, If-Match, Accept, Accept-Encoding, Accept-Language, Cache-Control, Pragma",
                ),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        r
    }

    /// Whether an unsigned link to `url` may be served; the reason for
    /// the player's 403 when not.
    pub fn unsigned(&self, url: &Url) -> Result<(), String> {
        if self.credentialed.contains(&url.origin()) {
            return Err(
                "this upstream has credentials in the settings file: only signed links \
                 (spool sign, POST /sign) may use it"
                    .into(),
            );
        }
        if !self.restricted || self.allow.lists(url) {
            return Ok(());
        }
        Err(
            "unsigned links are served only for upstreams named in --allow-upstream; \
             use a signed link (spool sign, POST /sign)"
                .into(),
        )
    }

    /// What a signed link's token grants, and the key that opened it;
    /// the reason for the player's 403 when it is refused.
    pub fn open(&self, token: &str) -> Result<(Grant, Key), String> {
        let Some(key) = &self.key else {
            return Err("signed links are not enabled here (no key)".into());
        };
        key.open_grant(token, SystemTime::now())
            .map(|g| (g, key.clone()))
            .map_err(|e| e.to_string())
    }

    /// Whether a request may use the admin endpoints: from loopback, or
    /// with the admin token.
    pub fn admin(&self, peer: Option<Peer>, headers: &HeaderMap) -> bool {
        if self.trust_loopback && peer.is_some_and(|p| canonical(p.0).is_loopback()) {
            return true;
        }
        let Some(token) = &self.admin_token else {
            return false;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim());
        // Digests, so that the comparison does not depend on the lengths.
        use sha2::{Digest, Sha256};
        let (a, b) = (Sha256::digest(given), Sha256::digest(token.as_bytes()));
        !given.is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The answer to a request for an admin endpoint without the right.
pub(crate) fn forbidden() -> Response {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "admin endpoint: ask from loopback or send Authorization: Bearer <SPOOL_ADMIN_TOKEN>",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"spool\""),
    );
    r
}

/// `POST /sign` with `{"url": "...", "expires": "30d", "scope": "file"}`
/// (expires optional, `never` for no expiry; scope optional, `directory`
/// by default for `.m3u8`, `.m3u` and `.mpd`): `{"url": "<signed link>"}`.
pub(crate) async fn sign(
    access: Access,
    peer: Option<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !access.admin(peer, &headers) {
        return forbidden();
    }
    let Some(key) = &access.key else {
        return text(
            StatusCode::CONFLICT,
            "no key: set SPOOL_SECRET or SPOOL_SECRET_FILE to sign links",
        );
    };
    let req: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    let Some(raw) = req.get("url").and_then(|u| u.as_str()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing \"url\": send {\"url\": \"http://...\", \"expires\": \"30d\"}",
        );
    };
    let url = match crate::upstream::parse_url(raw) {
        Ok(u) => u,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let expires = match req.get("expires") {
        None => signing::parse_expires("30d"),
        Some(serde_json::Value::String(s)) => signing::parse_expires(s),
        Some(_) => Err("\"expires\" must be a string such as \"30d\" or \"never\"".into()),
    };
    let expires: Expiry = match expires {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    // Playlists and manifests get a directory-scoped link, so that what
    // they name resolves through spool; `"scope"` says so explicitly.
    let scope = match req.get("scope").and_then(|s| s.as_str()) {
        None if signing::is_playlist_name(&url) => Scope::Dir,
        None | Some("file") => Scope::File,
        Some("directory" | "dir") => Scope::Dir,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("\"scope\" is \"file\" or \"directory\", not {other:?}"),
            )
        }
    };
    let Some(link) = signing::link_scoped(&access.public_url, key, &url, expires, scope) else {
        return text(StatusCode::BAD_REQUEST, "\"expires\" is too far away");
    };
    let body = serde_json::json!({ "url": link });
    let mut r = Response::new(Bytes::from(body.to_string()).into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
