//! Who may read media: signed links, the unsigned-link rule, and the
//! CORS headers of media answers. (The control plane has its own rules:
//! `control.rs`.)
//!
//! - With a key (`--secret`, `--secret-file`) or on an address beyond
//!   loopback, unsigned `/stream?url=` (and its path form `/p/`) is
//!   served only for upstreams that
//!   `--allow-upstream` names; anything else needs a signed link
//!   (`/s/<token>/<file name>`). On loopback without a key, as on a
//!   laptop, unsigned links are served as before (without CORS headers).
//!   Origins with credentials in the settings file need signed links.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use url::Url;
use warp::reply::Response;

use crate::signing::{Grant, Key};
use crate::upstream::allow::AllowList;

/// The access rules. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Access {
    pub key: Option<Key>,
    /// Unsigned links only for listed upstreams.
    pub restricted: bool,
    pub allow: Arc<AllowList>,
    /// Origins with request headers (credentials) from the settings file:
    /// only signed links may reach them.
    pub credentialed: Arc<Vec<url::Origin>>,
    pub public_url: Arc<str>,
    /// The public URL's host name, lower case, when it is a name.
    pub public_host: Option<Arc<str>>,
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

    /// Whether an unsigned request sent with this `Host` may be answered;
    /// the reason for the player's 421 when not.
    ///
    /// An open spool (loopback, no key) fetches for whoever can make a
    /// request to it. A web page whose name was rebound to spool's
    /// address (DNS rebinding) would be that, and read as its own origin
    /// what spool fetches: the private media servers `--allow-upstream`
    /// names too. Such a page sends its own name as `Host`, so an open
    /// spool answers unsigned links only to an address literal,
    /// `localhost`, or the name of `--public-url` (a literal address
    /// cannot be rebound). Restricted, unsigned links reach only listed
    /// upstreams, which whoever reaches the port may use anyway; signed
    /// links need their token.
    pub fn unsigned_host(&self, headers: &HeaderMap) -> Result<(), String> {
        if self.restricted {
            return Ok(());
        }
        let host = super::control::request_host(headers);
        let name = super::control::host_name(&host);
        let allowed = name.is_some_and(|n| {
            n == "localhost"
                || n.parse::<std::net::IpAddr>().is_ok()
                || self.public_host.as_deref() == Some(n)
        });
        match allowed {
            true => Ok(()),
            false => Err(format!(
                "Host {host:?} is not a name this spool answers unsigned links to: use its \
                 address or localhost, or set --public-url to the address players use \
                 (a page whose name points at spool may not use it as a proxy)"
            )),
        }
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
}
