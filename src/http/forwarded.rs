//! Life behind a reverse proxy (`--trusted-proxies`, and a path prefix in
//! `--public-url`). From a peer in a trusted network only, the client's
//! address comes from the header those proxies write
//! (`--forwarded-header`: `X-Forwarded-For`, or `Forwarded`, RFC 7239),
//! never from the other, which a proxy passes on as the client wrote it:
//! the rightmost hop that is not a trusted proxy, since every hop to its
//! left was written by someone spool does not trust. The
//! address is what per-client limits, logs and admin checks use; a
//! proxied request is never an admin by loopback. Requests arrive with or
//! without the public URL's path prefix (proxies that strip it and those
//! that do not); spool answers both.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Uri};
use ipnet::IpNet;

use tracing::warn;

/// Whether a request with only the forwarding header not read was seen.
static OTHER_SEEN: AtomicBool = AtomicBool::new(false);

/// The forwarding header the proxies of `--trusted-proxies` write. Only
/// that one is read: the other arrives as the client wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, Caddy, Traefik, HAProxy `option
    /// forwardfor`).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239; HAProxy `option forwarded`).
    Forwarded,
}

/// What the listeners know of the proxies in front of them. Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Front {
    /// `--trusted-proxies`.
    pub trusted: Arc<Vec<IpNet>>,
    /// The path of `--public-url` without its trailing `/` ("" for none).
    pub prefix: Arc<str>,
    /// `--forwarded-header`: the one forwarding header read.
    pub header: ForwardedHeader,
}

impl Front {
    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|n| n.contains(&peer))
    }

    /// The client a trusted proxy's request is for: the rightmost hop of
    /// its forwarding header that is not a trusted proxy (the leftmost
    /// when all are). An entry that is not an address (`unknown`, an
    /// obfuscated name) stops the walk: the hop to its right is taken.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let hops = hops(self.header, headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match hop {
                Some(ip) => client = *ip,
                None => break,
            }
        }
        client.to_canonical()
    }

    /// `uri` without the path prefix, when it has it.
    pub fn strip(&self, uri: &Uri) -> Option<Uri> {
        let prefix = &*self.prefix;
        if prefix.is_empty() {
            return None;
        }
        let path = uri.path();
        let rest = path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let rest = if rest.is_empty() { "/" } else { rest };
        let pq = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq.parse().ok()?);
        Uri::from_parts(parts).ok()
    }

    /// Whether a request carries a forwarding header (a proxy always adds
    /// one). Either counts, the one not read too: a request that may have
    /// come through a proxy is no admin by loopback. One with only the
    /// other header is its proxy's own client, and said once: a proxy
    /// that writes the other header needs `--forwarded-header`.
    pub fn forwarded(&self, headers: &HeaderMap) -> bool {
        let read = headers.contains_key(name(self.header));
        let other = headers.contains_key(name(match self.header {
            ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
            ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
        }));
        if other && !read && !OTHER_SEEN.swap(true, Ordering::Relaxed) {
            warn!(
                read = name(self.header).as_str(),
                "a request from a trusted proxy names its client only in the other forwarding header; it counts as the proxy's own (set --forwarded-header if the proxy writes that one)"
            );
        }
        read || other
    }
}

/// The path prefix of a public URL: `https://home.lan/spool/` gives
/// `/spool`; none gives "".
pub(crate) fn prefix_of(public_url: &str) -> String {
    url::Url::parse(public_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The header's name.
fn name(header: ForwardedHeader) -> http::HeaderName {
    match header {
        ForwardedHeader::XForwardedFor => http::HeaderName::from_static("x-forwarded-for"),
        ForwardedHeader::Forwarded => http::header::FORWARDED,
    }
}

/// The entries of comma-separated header values, each read on its own:
/// bytes a client put before a proxy's hop cannot spoil that hop.
fn entries<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> Vec<String> {
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|e| String::from_utf8_lossy(e).trim().to_owned())
        .collect()
}

/// The hops the forwarding header names, leftmost first; None for an
/// entry that is no address.
fn hops(header: ForwardedHeader, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let entries = entries(headers.get_all(name(header)).iter());
    if header == ForwardedHeader::XForwardedFor {
        return entries.iter().map(|h| address(h)).collect();
    }
    entries
        .into_iter()
        .map(|element| {
            // `for=` of each element; an element without one names no
            // address, like `for=unknown` (the walk stops there: a proxy's
            // element without it must not hand the walk to the client's).
            element
                .split(';')
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| address(v.trim().trim_matches('"')))
                })
                .flatten()
        })
        .collect()
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn address(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(nets: &[&str], prefix: &str) -> Front {
        Front {
            trusted: Arc::new(nets.iter().map(|n| n.parse().unwrap()).collect()),
            prefix: prefix.into(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let f = front(&["127.0.0.1/32", "10.0.0.0/8"], "");
        let lo = ip("127.0.0.1");
        let cases: &[(&[(&str, &str)], &str)] = &[
            // No header: the proxy itself.
            (&[], "127.0.0.1"),
            (&[("x-forwarded-for", "203.0.113.5")], "203.0.113.5"),
            // What the client wrote itself is left of the real hop.
            (
                &[("x-forwarded-for", "127.0.0.1, 203.0.113.5")],
                "203.0.113.5",
            ),
            (
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.1.2.3")],
                "203.0.113.5",
            ),
            // Two header lines are one list.
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.7"),
                ],
                "198.51.100.7",
            ),
            // All trusted: the leftmost.
            (&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")], "10.9.9.9"),
            // Garbage stops the walk at the hop to its right.
            (&[("x-forwarded-for", "203.0.113.5, unknown")], "127.0.0.1"),
            (
                &[("x-forwarded-for", "203.0.113.5, 10.0.0.2, nonsense")],
                "127.0.0.1",
            ),
            // The other header is the client's word: not read, with or
            // without X-Forwarded-For.
            (
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                "203.0.113.9",
            ),
            (&[("forwarded", "for=6.6.6.6")], "127.0.0.1"),
            (&[("x-forwarded-for", "203.0.113.5:4431")], "203.0.113.5"),
            (&[("x-forwarded-for", "::ffff:203.0.113.5")], "203.0.113.5"),
        ];
        for (headers, want) in cases {
            assert_eq!(f.client(lo, &h(headers)), ip(want), "{headers:?}");
        }
        // An untrusted peer's headers are nobody's word: the caller does
        // not ask; and if it did, the peer itself is the client.
        let lan = ip("192.168.1.9");
        assert!(!f.trusts(lan));
        assert_eq!(f.client(lan, &h(&[("x-forwarded-for", "1.2.3.4")])), lan);
        assert!(f.trusts(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn with_forwarded_only_that_header_is_read() {
        let mut f = front(&["127.0.0.1/32", "10.0.0.0/8"], "");
        f.header = ForwardedHeader::Forwarded;
        let lo = ip("127.0.0.1");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
                "192.0.2.60",
            ),
            (
                &[(
                    "forwarded",
                    "for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.1",
                )],
                "2001:db8:cafe::17",
            ),
            // What the client wrote itself is left of the real hop.
            (
                &[("forwarded", "for=6.6.6.6, for=198.51.100.7")],
                "198.51.100.7",
            ),
            (&[("forwarded", "for=_hidden")], "127.0.0.1"),
            // An element without `for=` names nobody: the walk stops there.
            (
                &[("forwarded", "proto=https, for=198.51.100.7")],
                "198.51.100.7",
            ),
            (&[("forwarded", "for=6.6.6.6, proto=https")], "127.0.0.1"),
            // X-Forwarded-For is now the client's word, even alone.
            (&[("x-forwarded-for", "6.6.6.6")], "127.0.0.1"),
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("forwarded", "for=203.0.113.9"),
                ],
                "203.0.113.9",
            ),
        ];
        for (headers, want) in cases {
            assert_eq!(f.client(lo, &h(headers)), ip(want), "{headers:?}");
        }
        // Either header says a proxy may be in between (no admin by
        // loopback), whichever is read.
        let x = front(&["127.0.0.1/32"], "");
        for front in [&f, &x] {
            assert!(front.forwarded(&h(&[("forwarded", "for=1.2.3.4")])));
            assert!(front.forwarded(&h(&[("x-forwarded-for", "1.2.3.4")])));
            assert!(!front.forwarded(&h(&[("via", "1.1 proxy")])));
        }
    }

    #[test]
    fn the_prefix_is_stripped_when_present() {
        let f = front(&[], "/spool");
        let strip = |s: &str| f.strip(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(strip("/spool/p/x?a=1").as_deref(), Some("/p/x?a=1"));
        assert_eq!(strip("/spool").as_deref(), Some("/"));
        assert_eq!(strip("/spool/").as_deref(), Some("/"));
        assert_eq!(strip("/spoolx/p/x"), None);
        assert_eq!(strip("/p/x"), None);
        assert_eq!(front(&[], "").strip(&"/p/x".parse().unwrap()), None);
        assert_eq!(prefix_of("https://home.lan/spool/"), "/spool");
        assert_eq!(prefix_of("http://192.168.1.5:8080"), "");
        assert_eq!(prefix_of("http://h/a/b"), "/a/b");
    }
}
