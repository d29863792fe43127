//! `POST /sign` on the control plane: `{"url": "...", "expires": "30d",
//! "scope": "file"}` → `{"url": "<signed link>"}` (expires optional,
//! `never` for no expiry; scope optional, `directory` by default for
//! `.m3u8`, `.m3u` and `.mpd`). Like every admin `POST` it takes
//! `Content-Type: application/json` only, and answers errors as
//! `{"error": "..."}`.

use http::StatusCode;
use warp::reply::Response;

use super::access::Access;
use super::error::{json, json_error as error};
use crate::signing::{self, Expiry, Scope};

/// Largest `POST /sign` body read.
pub(crate) const SIGN_BODY: usize = 64 * 1024;

/// Signs a link for a request that already passed the admin checks.
pub(crate) fn sign(access: &Access, body: &[u8]) -> Response {
    let Some(key) = &access.key else {
        return error(
            StatusCode::CONFLICT,
            "no key: set SPOOL_SECRET or SPOOL_SECRET_FILE to sign links",
        );
    };
    let req: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    let Some(raw) = req.get("url").and_then(|u| u.as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing \"url\": send {\"url\": \"http://...\", \"expires\": \"30d\"}",
        );
    };
    let url = match crate::upstream::parse_url(raw) {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let expires = match req.get("expires") {
        None => signing::parse_expires("30d"),
        Some(serde_json::Value::String(s)) => signing::parse_expires(s),
        Some(_) => Err("\"expires\" must be a string such as \"30d\" or \"never\"".into()),
    };
    let expires: Expiry = match expires {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    // Playlists and manifests get a directory-scoped link, so that what
    // they name resolves through spool; `"scope"` says so explicitly.
    let scope = match req.get("scope").and_then(|s| s.as_str()) {
        None if signing::is_playlist_name(&url) => Scope::Dir,
        None | Some("file") => Scope::File,
        Some("directory" | "dir") => Scope::Dir,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("\"scope\" is \"file\" or \"directory\", not {other:?}"),
            )
        }
    };
    let Some(link) = signing::link_scoped(&access.public_url, key, &url, expires, scope) else {
        return error(StatusCode::BAD_REQUEST, "\"expires\" is too far away");
    };
    json(StatusCode::OK, &serde_json::json!({ "url": link }))
}
