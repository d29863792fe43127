//! Where the redirect hops of one fetch may lead, and whether credentials
//! go with it: the access rule of the request the fetch belongs to, held
//! on every hop (the address rules of `allow.rs` apply on top, always).
//!
//! - An unsigned link where unsigned links are limited: every hop must be
//!   a host `--allow-upstream` names as written, or a redirect host of the
//!   `[[upstream]]` the chain started at; never an origin with
//!   credentials. An open redirect on a listed host leads nowhere else.
//! - A directory token: every hop stays below the signed directory, or
//!   goes to a redirect host of its upstream.
//! - A signed file link, an admin's prefetch: anywhere the address rules
//!   allow.
//!
//! Credentials (`[[upstream]]` headers) go only with signed links and
//! prefetches, only to the origin the chain started at, and never again
//! once a hop left that origin (as curl and browsers drop
//! `Authorization`): a hop that arrives at a credentialed origin by a
//! redirect from elsewhere is sent without them.

use std::sync::Arc;

use url::Url;

use super::allow::AllowList;
use super::key::QueryFilter;

/// Where hops may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hops {
    /// Anywhere the address rules allow.
    Any,
    /// Hosts the allowlist names as written, or redirect hosts.
    Listed,
    /// Below this directory (its path ends in `/`), or redirect hosts.
    Below(Arc<Url>),
}

/// The rule of one request's fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamRule {
    pub hops: Hops,
    /// Whether the first origin's `[[upstream]]` headers may be sent.
    pub credentials: bool,
}

impl UpstreamRule {
    /// A signed file link or an admin's request: any hop, credentials.
    pub fn signed() -> UpstreamRule {
        UpstreamRule {
            hops: Hops::Any,
            credentials: true,
        }
    }

    /// An unsigned link: listed hosts only where unsigned links are
    /// limited (`restricted`); never credentials.
    pub fn unsigned(restricted: bool) -> UpstreamRule {
        UpstreamRule {
            hops: if restricted { Hops::Listed } else { Hops::Any },
            credentials: false,
        }
    }

    /// A directory token for `dir`.
    pub fn below(dir: Url) -> UpstreamRule {
        UpstreamRule {
            hops: Hops::Below(Arc::new(dir)),
            credentials: true,
        }
    }

    /// Whether everything this rule allows, `other` allows too.
    pub fn within(&self, other: &UpstreamRule) -> bool {
        let hops = match (&self.hops, &other.hops) {
            (_, Hops::Any) => true,
            (a, b) => a == b,
        };
        hops && (!self.credentials || other.credentials)
    }
}

/// What the `[[upstream]]` tables say of one origin.
#[derive(Debug, Clone)]
pub(crate) struct OriginRule {
    pub origin: url::Origin,
    /// Request headers (credentials), sent only as the module says.
    pub headers: http::HeaderMap,
    /// Hosts its redirects may lead to (`*.domain` for any name below).
    pub redirect_hosts: Vec<String>,
    /// Query parameters not part of its media's identity, beyond
    /// `Rules::cache_key_ignore_query`.
    pub cache_key_ignore_query: QueryFilter,
    /// Fill while watched for its media, whatever `--fill-while-watched`
    /// says (None: as it says).
    pub fill_while_watched: Option<bool>,
}

/// The `[[upstream]]` tables and the allowlist, as hops are judged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    pub origins: Vec<OriginRule>,
    /// Query parameters not part of any media's identity
    /// (`--cache-key-ignore-query`).
    pub cache_key_ignore_query: QueryFilter,
}

impl Rules {
    fn of(&self, origin: &url::Origin) -> Option<&OriginRule> {
        self.origins.iter().find(|r| r.origin == *origin)
    }

    /// The cache key of `url` (`key.rs`): `None` when the URL is its own.
    pub fn cache_key(&self, url: &Url) -> Option<Url> {
        match self.of(&url.origin()) {
            Some(r) if !r.cache_key_ignore_query.is_empty() => self
                .cache_key_ignore_query
                .and(&r.cache_key_ignore_query)
                .key(url),
            _ => self.cache_key_ignore_query.key(url),
        }
    }

    /// Whether fill while watched is on or off for `url`'s origin, when its
    /// `[[upstream]]` says.
    pub fn fill_while_watched(&self, url: &Url) -> Option<bool> {
        self.of(&url.origin())?.fill_while_watched
    }

    /// The headers to send to `origin`, if it has any.
    pub fn headers(&self, origin: &url::Origin) -> Option<&http::HeaderMap> {
        self.of(origin)
            .map(|r| &r.headers)
            .filter(|h| !h.is_empty())
    }

    /// Whether `origin` has credentials in the settings file.
    pub fn credentialed(&self, origin: &url::Origin) -> bool {
        self.headers(origin).is_some()
    }

    /// Whether a redirect of a chain that started at `first` may lead to
    /// `hop` under `rule`; the reason when not.
    pub fn hop(
        &self,
        rule: &UpstreamRule,
        allow: &AllowList,
        first: &Url,
        hop: &Url,
    ) -> Result<(), String> {
        let redirect_host = || {
            let host = hop.host_str().unwrap_or("").to_ascii_lowercase();
            self.of(&first.origin()).is_some_and(|r| {
                r.redirect_hosts.iter().any(|p| match p.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    None => *p == host,
                })
            })
        };
        let host = hop.host_str().unwrap_or("");
        match &rule.hops {
            Hops::Any => Ok(()),
            Hops::Listed => {
                if self.credentialed(&hop.origin()) {
                    return Err(format!(
                        "a redirect leads to {host}, which has credentials in the settings \
                         file: only signed links may use it"
                    ));
                }
                if allow.lists(hop) || redirect_host() {
                    return Ok(());
                }
                Err(format!(
                    "a redirect leads to {host}, which --allow-upstream does not name \
                     (unsigned links are served for listed upstreams only; see redirect_hosts \
                     in [[upstream]])"
                ))
            }
            Hops::Below(dir) => {
                let below = hop.origin() == dir.origin()
                    && hop.username() == dir.username()
                    && hop.path().starts_with(dir.path());
                if below || redirect_host() {
                    return Ok(());
                }
                Err("a redirect leads out of the signed directory".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn rules() -> Rules {
        let mut creds = http::HeaderMap::new();
        creds.insert("x-token", "t".parse().unwrap());
        Rules {
            origins: vec![
                OriginRule {
                    origin: u("http://nas.lan:8096").origin(),
                    headers: creds,
                    redirect_hosts: vec![],
                    cache_key_ignore_query: QueryFilter::default(),
                    fill_while_watched: Some(true),
                },
                OriginRule {
                    origin: u("https://cdn.example").origin(),
                    headers: http::HeaderMap::new(),
                    redirect_hosts: vec!["store.example.net".into(), "*.s3.example".into()],
                    cache_key_ignore_query: QueryFilter::parse(&["X-Amz-*"]).unwrap(),
                    fill_while_watched: Some(false),
                },
            ],
            cache_key_ignore_query: QueryFilter::parse(&["token"]).unwrap(),
        }
    }

    #[test]
    fn cache_keys_add_an_upstreams_names_to_the_global_ones() {
        let r = rules();
        let key = |s: &str| r.cache_key(&u(s)).map(|k| k.to_string());
        // cdn.example ignores X-Amz-* and, as every origin does, token.
        assert_eq!(
            key("https://cdn.example/a.mp4?X-Amz-Signature=1&token=2&v=3").as_deref(),
            Some("https://cdn.example/a.mp4?v=3")
        );
        // Elsewhere only the global names.
        assert_eq!(
            key("http://media.lan/a.mp4?X-Amz-Signature=1&token=2").as_deref(),
            Some("http://media.lan/a.mp4?X-Amz-Signature=1")
        );
        assert_eq!(key("http://media.lan/a.mp4?v=1"), None);
    }

    #[test]
    fn an_upstream_turns_fill_while_watched_on_or_off() {
        let r = rules();
        let fill = |s: &str| r.fill_while_watched(&u(s));
        assert_eq!(fill("http://nas.lan:8096/film.mkv"), Some(true));
        assert_eq!(fill("https://cdn.example/a.mp4?x=1"), Some(false));
        // Another port is another origin; one with no table does not say.
        assert_eq!(fill("http://nas.lan:8097/film.mkv"), None);
        assert_eq!(fill("http://media.lan/a.mp4"), None);
    }

    #[test]
    fn hops_obey_the_rule_of_their_request() {
        let r = rules();
        let allow = AllowList::parse("cdn.example,media.lan,nas.lan").unwrap();
        let listed = UpstreamRule::unsigned(true);
        let cdn = u("https://cdn.example/v/a.mp4");
        let media = u("http://media.lan/x.mp4");
        // Listed hosts, and a listed upstream's redirect hosts.
        for (first, hop, ok) in [
            (&media, "http://media.lan/y.mp4", true),
            (&media, "http://cdn.example/y.mp4", true),
            (&media, "http://evil.example/", false),
            (&media, "http://169.254.169.254/latest", false),
            (&cdn, "https://store.example.net/o/1", true),
            (&cdn, "https://b1.s3.example/o/1", true),
            (&cdn, "https://s3.example/o/1", false),
            (&cdn, "https://evils3.example/o/1", false),
            (&media, "https://store.example.net/o/1", false),
            // Listed, but with credentials: signed links only.
            (&media, "http://nas.lan:8096/Videos/1", false),
        ] {
            assert_eq!(
                r.hop(&listed, &allow, first, &u(hop)).is_ok(),
                ok,
                "{first} -> {hop}"
            );
        }
        // An open spool (not restricted) and signed links: any hop.
        for reach in [UpstreamRule::unsigned(false), UpstreamRule::signed()] {
            assert!(r
                .hop(&reach, &allow, &media, &u("http://evil.example/"))
                .is_ok());
        }
        // A directory token: below it, or a redirect host of its upstream.
        let dir = UpstreamRule::below(u("https://cdn.example/show/"));
        let first = u("https://cdn.example/show/seg1.ts");
        for (hop, ok) in [
            ("https://cdn.example/show/hd/seg1.ts", true),
            ("https://cdn.example/other/seg1.ts", false),
            ("https://cdn.example/showtime/x", false),
            ("http://cdn.example/show/seg1.ts", false),
            ("https://user@cdn.example/show/seg1.ts", false),
            ("https://b.s3.example/seg1.ts", true),
            ("https://evil.example/show/seg1.ts", false),
        ] {
            assert_eq!(r.hop(&dir, &allow, &first, &u(hop)).is_ok(), ok, "{hop}");
        }
    }

    #[test]
    fn credentials_and_widths() {
        let r = rules();
        assert!(r.credentialed(&u("http://nas.lan:8096/x").origin()));
        assert!(!r.credentialed(&u("https://cdn.example/x").origin()));
        assert!(!r.credentialed(&u("http://nas.lan:8097/x").origin()));
        let listed = UpstreamRule::unsigned(true);
        assert!(listed.within(&UpstreamRule::signed()));
        assert!(!UpstreamRule::signed().within(&listed));
        assert!(UpstreamRule::unsigned(false).within(&UpstreamRule::signed()));
        let dir = UpstreamRule::below(u("http://h/d/"));
        assert!(dir.within(&dir.clone()));
        assert!(!dir.within(&listed));
        assert!(!listed.within(&dir));
    }
}
