//! The HTTP client to origins: the allowlist enforced on resolved
//! addresses and redirects, timeouts, and what an answer's status means.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{header, StatusCode};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::allow::AllowList;
use super::answer::Answer;
use super::error::{DeniedError, UpstreamError};
use super::origins::{Limits, Origins};
use super::rule::{Rules, UpstreamRule};
use crate::history::{Event, Kind};
use crate::metrics::Metrics;

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

/// How spool talks to origins.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub allow: AllowList,
    pub connect_timeout: Duration,
    /// Time for an origin to answer, and the longest silence in a body.
    pub timeout: Duration,
    pub max_redirects: usize,
    /// Times a broken transfer is resumed before giving up.
    pub retries: u32,
    /// Bytes spool downloads and drops to reach a position in a media
    /// whose origin ignores Range.
    pub max_skip: u64,
    /// The `[[upstream]]` tables: request headers (credentials for a NAS)
    /// and redirect hosts per origin (`rule.rs`).
    pub rules: Rules,
    /// Transfers and streams per origin host (`origins.rs`).
    pub limits: Limits,
}

/// The HTTP client to origins. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    timeout: Duration,
    retries: u32,
    max_redirects: usize,
    max_skip: u64,
    rules: Arc<Rules>,
    origins: Origins,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(cfg: &Settings, metrics: Arc<Metrics>) -> Result<Upstream, UpstreamError> {
        // reqwest is built without a bundled crypto provider; ring is the
        // smaller one to build.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allow = Arc::new(cfg.allow.clone());
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.timeout)
            // Redirects are followed by `get_raw`, which checks every hop's
            // host and port against the allowlist before connecting.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(CheckedResolver {
                allow: allow.clone(),
            })
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("spool/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(Upstream {
            client,
            allow,
            timeout: cfg.timeout,
            retries: cfg.retries,
            max_redirects: cfg.max_redirects,
            max_skip: cfg.max_skip,
            rules: Arc::new(cfg.rules.clone()),
            origins: Origins::new(cfg.limits, metrics.clone()),
            metrics,
        })
    }

    /// The cache key of a media URL: `None` when the URL is its own
    /// (no query parameter the settings ignore).
    pub fn cache_key(&self, url: &Url) -> Option<Url> {
        self.rules.cache_key(url)
    }

    /// Whether `url`'s `[[upstream]]` turns fill while watched on or off
    /// (None: it does not say).
    pub fn fill_while_watched(&self, url: &Url) -> Option<bool> {
        self.rules.fill_while_watched(url)
    }

    /// Times a broken transfer is resumed in a row before giving up.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Refuses to reach byte `pos` of an origin that ignores Range when
    /// that means dropping more than `--max-skip` bytes.
    pub fn may_skip(&self, pos: u64) -> Result<(), UpstreamError> {
        if pos > self.max_skip {
            return Err(UpstreamError::RangeIgnored(pos, self.max_skip));
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Transfers and streams per origin host.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// Checks a media URL against the allowlist on its resolved addresses,
    /// before any connection is made.
    pub async fn check(&self, url: &Url) -> Result<(), UpstreamError> {
        self.route(url).await.map(|_| ())
    }

    /// Where to connect for `url`: the URL itself (names go through the
    /// checking resolver), or, for a name allowed only through an entry
    /// with a port, the checked address itself with the name in `Host`,
    /// so that no later DNS answer can lead elsewhere.
    async fn route(&self, url: &Url) -> Result<(Url, Option<String>), UpstreamError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        if check_literal(&self.allow, url)? {
            return Ok((url.clone(), None));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(UpstreamError::Unreachable(format!("{host} has no address")));
        }
        if addrs
            .iter()
            .any(|a| self.allow.permits_any_port(&host, a.ip()))
        {
            return Ok((url.clone(), None));
        }
        let Some(pinned) = addrs
            .iter()
            .find(|a| self.allow.permits(&host, a.ip(), port))
        else {
            return Err(UpstreamError::Denied(format!(
                "{host} is a local or private address; allow it with --allow-upstream"
            )));
        };
        let mut direct = url.clone();
        let ip = match pinned.ip() {
            IpAddr::V4(v4) => url::Host::<String>::Ipv4(v4),
            IpAddr::V6(v6) => url::Host::Ipv6(v6),
        };
        direct
            .set_host(Some(&ip.to_string()))
            .map_err(|e| UpstreamError::BadUrl(e.to_string()))?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok((direct, Some(host_header)))
    }

    /// The time an origin has to answer, and the longest silence in a body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a chain of redirects that started at `first` and landed at
    /// `last` (fetched under another request's rule) is one `rule` allows.
    pub fn check_landing(
        &self,
        rule: &UpstreamRule,
        first: &Url,
        last: &Url,
    ) -> Result<(), UpstreamError> {
        if first == last {
            return Ok(());
        }
        self.rules
            .hop(rule, &self.allow, first, last)
            .map_err(UpstreamError::Denied)
    }

    /// GET with an optional `Range: bytes=start-[end]`. Error statuses are
    /// turned into errors; 200, 206 and 416 are returned.
    pub async fn get(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Answer, UpstreamError> {
        let range = range.map(|(start, end)| {
            let end = end.map(|e| e.to_string()).unwrap_or_default();
            format!("bytes={start}-{end}")
        });
        self.get_raw(url, rule, range.as_deref()).await
    }

    /// GET with a player's own `Range` header value (or none), following
    /// redirects: every hop's destination (host, port, resolved addresses)
    /// is checked against the allowlist before spool connects to it, and
    /// against `rule`, the rule of the request it belongs to.
    pub async fn get_raw(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<&str>,
    ) -> Result<Answer, UpstreamError> {
        self.get_following(url, rule, range)
            .await
            .map(|(resp, _)| resp)
    }

    /// [`Upstream::get_raw`], also returning the URL that answered after
    /// redirects (as asked for, never a pinned address): what relative
    /// references in the answer resolve against.
    pub async fn get_following(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<&str>,
    ) -> Result<(Answer, Url), UpstreamError> {
        self.follow(url, rule, range, None).await
    }

    /// [`Upstream::get_following`] asked conditionally: with
    /// `If-None-Match` for an ETag and `If-Modified-Since` for a
    /// Last-Modified a copy kept had. The answer may be 304 Not Modified.
    pub async fn get_following_if(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<(Answer, Url), UpstreamError> {
        let mut h = http::HeaderMap::new();
        let mut add = |name, value: Option<&str>| {
            if let Some(v) = value.and_then(|v| http::HeaderValue::from_str(v).ok()) {
                h.insert(name, v);
            }
        };
        add(header::IF_NONE_MATCH, etag);
        add(header::IF_MODIFIED_SINCE, last_modified);
        self.follow(url, rule, None, Some(&h)).await
    }

    /// [`Upstream::hops`]; a failure goes to the history too.
    async fn follow(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<&str>,
        conditional: Option<&http::HeaderMap>,
    ) -> Result<(Answer, Url), UpstreamError> {
        let answer = self.hops(url, rule, range, conditional).await;
        match &answer {
            // Refused before reaching an origin: a client's mistake, not
            // the origin's failure (and not a row per bad request).
            Err(UpstreamError::BadUrl(_) | UpstreamError::Denied(_)) => {}
            Err(e) => self.failed(url, e),
            Ok(_) => {}
        }
        answer
    }

    /// An origin request that failed, for the history (the same failure
    /// of the same URL within a minute is one event).
    pub(crate) fn failed(&self, url: &Url, e: &UpstreamError) {
        let event = Event::new(Kind::UpstreamFailure, crate::history::now_unix())
            .reason(e.class())
            .url(redact(url));
        self.metrics.history.record(event);
    }

    async fn hops(
        &self,
        url: &Url,
        rule: &UpstreamRule,
        range: Option<&str>,
        conditional: Option<&http::HeaderMap>,
    ) -> Result<(Answer, Url), UpstreamError> {
        let first = url.clone();
        let mut url = url.clone();
        // Credentials only while the chain has not left its first origin.
        let mut credentials = rule.credentials;
        for hop in 0..=self.max_redirects {
            if hop > 0 {
                self.rules
                    .hop(rule, &self.allow, &first, &url)
                    .map_err(UpstreamError::Denied)?;
                credentials &= url.origin() == first.origin();
            }
            // The first hop of a new media was checked by the caller; with
            // port-scoped allow entries every hop is routed (it may have to
            // go to a pinned address).
            let (target, host_header) = if hop > 0 || self.allow.has_port_entries() {
                self.route(&url).await?
            } else {
                (url.clone(), None)
            };
            // Judged on the URL asked for, not a pinned address.
            let extra = credentials
                .then(|| self.rules.headers(&url.origin()))
                .flatten();
            // An origin that asked for a pause gets it from every request.
            self.origins.pause(&url).await;
            let asked = std::time::Instant::now();
            let resp = self
                .send(&target, host_header.as_deref(), range, extra, conditional)
                .await?;
            let host = self.metrics.host(&url);
            self.metrics.upstream_answered(&host, asked.elapsed());
            let status = resp.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                // Not Modified answers a conditional request only.
                let resp = match status == StatusCode::NOT_MODIFIED && conditional.is_some() {
                    true => resp,
                    false => answer(resp).inspect_err(|e| {
                        if let UpstreamError::Busy(_, wait) = e {
                            self.origins.busy(&url, *wait);
                            if url.origin() != first.origin() {
                                self.origins.slow_down(&first, *wait);
                            }
                        }
                    })?,
                };
                return Ok((Answer::new(resp, self.timeout, self.metrics.clone()), url));
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Protocol(format!("{status} without Location")))?;
            // Relative to the URL asked for (not the pinned address).
            let next = url
                .join(location)
                .map_err(|e| UpstreamError::Protocol(format!("bad Location {location:?}: {e}")))?;
            url = parse_url(next.as_str())?;
        }
        Err(UpstreamError::Protocol(format!(
            "more than {} redirects",
            self.max_redirects
        )))
    }

    /// One GET, no redirects followed.
    async fn send(
        &self,
        url: &Url,
        host: Option<&str>,
        range: Option<&str>,
        extra: Option<&http::HeaderMap>,
        conditional: Option<&http::HeaderMap>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self.client.get(url.clone());
        if let Some(extra) = extra {
            req = req.headers(extra.clone());
        }
        if let Some(c) = conditional {
            req = req.headers(c.clone());
        }
        req = req
            // Ranges address the stored bytes, not a compressed rendition.
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        self.metrics.upstream_requests.inc();
        tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)
    }
}

/// How long an origin asks to be left alone (`Retry-After`: seconds, or
/// an HTTP date).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// What an origin's final answer means: 200, 206 and 416 are answers;
/// error statuses become errors.
fn answer(resp: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    match resp.status() {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
            Ok(resp)
        }
        s @ (StatusCode::NOT_FOUND
        | StatusCode::FORBIDDEN
        | StatusCode::UNAUTHORIZED
        | StatusCode::GONE) => Err(UpstreamError::Status(s)),
        s @ StatusCode::TOO_MANY_REQUESTS => Err(UpstreamError::Busy(s, retry_after(&resp))),
        s @ StatusCode::SERVICE_UNAVAILABLE => match retry_after(&resp) {
            Some(wait) => Err(UpstreamError::Busy(s, Some(wait))),
            None => Err(UpstreamError::BadStatus(s)),
        },
        s => Err(UpstreamError::BadStatus(s)),
    }
}

/// Parses a media URL: absolute, http or https, with a host.
pub(crate) fn parse_url(raw: &str) -> Result<Url, UpstreamError> {
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

/// A URL for logs: the query string and password may hold credentials.
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("REDACTED"));
    }
    let _ = u.set_password(None);
    u.to_string()
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
    fn busy_origins_say_how_long_to_wait() {
        let resp = |status: u16, after: Option<&str>| {
            let mut b = http::Response::builder().status(status);
            if let Some(a) = after {
                b = b.header("retry-after", a);
            }
            reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap())
        };
        let busy = |e: Result<reqwest::Response, UpstreamError>| e.err();
        assert_eq!(
            busy(answer(resp(429, Some("7")))),
            Some(UpstreamError::Busy(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(7))
            ))
        );
        assert_eq!(
            busy(answer(resp(429, None))),
            Some(UpstreamError::Busy(StatusCode::TOO_MANY_REQUESTS, None))
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        match busy(answer(resp(503, Some(&later)))) {
            Some(UpstreamError::Busy(s, Some(d))) => {
                assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
                assert!(
                    d > Duration::from_secs(50) && d <= Duration::from_secs(60),
                    "{d:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A 503 that does not say when is a failure like any other.
        assert_eq!(
            busy(answer(resp(503, None))),
            Some(UpstreamError::BadStatus(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(
            busy(answer(resp(429, Some("soon")))),
            Some(UpstreamError::Busy(StatusCode::TOO_MANY_REQUESTS, None))
        );
    }

    proptest::proptest! {
        /// Any `url=` value: a clear error or an absolute http(s) URL with
        /// a host, never a panic.
        #[test]
        fn fuzz_media_url(raw in "(https?|ftp|file)?:?/{0,3}[^ ]{0,60}|.{0,80}") {
            if let Ok(url) = parse_url(&raw) {
                proptest::prop_assert!(matches!(url.scheme(), "http" | "https"));
                proptest::prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            }
        }
    }
}
