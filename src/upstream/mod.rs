//! Requests to the origin, and what their answers mean.

pub mod allow;
pub mod resume;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, StatusCode};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::config::Config;
use crate::upstream::allow::AllowList;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("bad url: {0}")]
    BadUrl(String),
    #[error("upstream destination not allowed: {0}")]
    Denied(String),
    /// The origin answered with an error status that players should see
    /// as it is (404, 403, 401, 410).
    #[error("origin answered {0}")]
    Status(StatusCode),
    /// The origin answered with a status spool cannot use (5xx and others).
    #[error("origin answered {0}")]
    BadStatus(StatusCode),
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin timed out")]
    Timeout,
    #[error("origin sent an unusable answer: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// The status a player gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::BadUrl(_) => StatusCode::BAD_REQUEST,
            UpstreamError::Denied(_) => StatusCode::FORBIDDEN,
            UpstreamError::Status(s) => *s,
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::BadStatus(_)
            | UpstreamError::Unreachable(_)
            | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Status(_) | UpstreamError::Denied(_) | UpstreamError::BadUrl(_)
        )
    }

    fn from_reqwest(e: reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            return UpstreamError::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(d) = s.downcast_ref::<DeniedError>() {
                return UpstreamError::Denied(d.0.clone());
            }
            source = s.source();
        }
        if e.is_redirect() {
            return UpstreamError::Protocol(error_chain(&e));
        }
        UpstreamError::Unreachable(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DeniedError(String);

/// Resolves names and drops addresses the allowlist refuses, so that
/// redirects and DNS answers cannot lead spool into the local network.
struct CheckedResolver {
    allow: Arc<AllowList>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // The port is not known here; port-specific entries were checked
            // on the request's URL before it was sent.
            let ok: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow.permits_any_port(&host, a.ip()))
                .collect();
            if ok.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(DeniedError(format!("{host} resolves to a refused address")));
                return Err(err);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// What one origin response says about the media and its body.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: StatusCode,
    /// Offset of the body's first byte in the media.
    pub start: u64,
    /// The media's total size, when the origin told it.
    pub total: Option<u64>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Head {
    pub fn parse(status: StatusCode, headers: &HeaderMap) -> Result<Head, UpstreamError> {
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_length = text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        let (start, total) = match status {
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                let cr = text(header::CONTENT_RANGE).ok_or_else(|| {
                    UpstreamError::Protocol(format!("{status} without Content-Range"))
                })?;
                parse_content_range(&cr)
                    .ok_or_else(|| UpstreamError::Protocol(format!("bad Content-Range {cr:?}")))?
            }
            _ => (0, content_length),
        };
        Ok(Head {
            status,
            start,
            total,
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        })
    }
}

/// Parses `bytes a-b/total`, `bytes a-b/*` or `bytes */total` into the
/// first byte's offset and the total size.
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => 0,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            a
        }
    };
    Some((start, total))
}

/// The HTTP client to origins.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &Config) -> anyhow::Result<Upstream> {
        // reqwest is built without a bundled crypto provider; ring is the
        // smaller one to build.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allow = Arc::new(cfg.allow_upstream.clone());
        let redirect_allow = allow.clone();
        let max_redirects = cfg.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            // Names are checked by the resolver; literal addresses never
            // reach it, so they are checked here.
            if let Err(e) = check_literal(&redirect_allow, attempt.url()) {
                return attempt.error(DeniedError(e.to_string()));
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.upstream_timeout)
            .redirect(policy)
            .dns_resolver(CheckedResolver {
                allow: allow.clone(),
            })
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("spool/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Upstream {
            client,
            allow,
            timeout: cfg.upstream_timeout,
        })
    }

    /// Checks a media URL against the allowlist on its resolved addresses,
    /// before any connection is made.
    pub async fn check(&self, url: &Url) -> Result<(), UpstreamError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        if check_literal(&self.allow, url)? {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("cannot resolve {host}: {e}")))?;
        let mut any = false;
        for a in addrs {
            any = true;
            if self.allow.permits(&host, a.ip(), port) {
                return Ok(());
            }
        }
        Err(if any {
            UpstreamError::Denied(format!(
                "{host} is a local or private address; allow it with --allow-upstream"
            ))
        } else {
            UpstreamError::Unreachable(format!("{host} has no address"))
        })
    }

    /// GET with an optional `Range: bytes=start-[end]`. Error statuses are
    /// turned into errors; 200, 206 and 416 are returned.
    pub async fn get(
        &self,
        url: &Url,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let range = range.map(|(start, end)| {
            let end = end.map(|e| e.to_string()).unwrap_or_default();
            format!("bytes={start}-{end}")
        });
        self.get_raw(url, range.as_deref()).await
    }

    /// GET with a player's own `Range` header value (or none).
    pub async fn get_raw(
        &self,
        url: &Url,
        range: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self
            .client
            .get(url.clone())
            // Ranges address the stored bytes, not a compressed rendition.
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        let resp = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                Ok(resp)
            }
            s @ (StatusCode::NOT_FOUND
            | StatusCode::FORBIDDEN
            | StatusCode::UNAUTHORIZED
            | StatusCode::GONE) => Err(UpstreamError::Status(s)),
            s => Err(UpstreamError::BadStatus(s)),
        }
    }

    /// Reads the next piece of a body, bounded by the upstream timeout.
    pub async fn next_piece(
        &self,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, UpstreamError> {
        tokio::time::timeout(self.timeout, resp.chunk())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)
    }
}

/// Parses a media URL: absolute, http or https, with a host.
pub fn parse_url(raw: &str) -> Result<Url, UpstreamError> {
    let url = Url::parse(raw).map_err(|e| UpstreamError::BadUrl(format!("{raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UpstreamError::BadUrl(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UpstreamError::BadUrl("no host".into()));
    }
    Ok(url)
}

/// For URLs whose host is an address literal: checks it and returns true.
/// Returns false for names, which the caller resolves.
fn check_literal(allow: &AllowList, url: &Url) -> Result<bool, UpstreamError> {
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(v4)) => v4.into(),
        Some(url::Host::Ipv6(v6)) => v6.into(),
        _ => return Ok(false),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let host = url.host_str().unwrap_or_default();
    if allow.permits(host, ip, port) {
        Ok(true)
    } else {
        Err(UpstreamError::Denied(format!(
            "{ip} is a local or private address; allow it with --allow-upstream"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */100"), Some((0, Some(100))));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-1"), None);
    }

    #[test]
    fn error_statuses() {
        assert_eq!(UpstreamError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            UpstreamError::BadStatus(StatusCode::SERVICE_UNAVAILABLE).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            UpstreamError::Status(StatusCode::NOT_FOUND).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            UpstreamError::Denied("x".into()).status(),
            StatusCode::FORBIDDEN
        );
    }
}
