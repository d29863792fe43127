//! Life behind a reverse proxy (`--trusted-proxies`, and a path prefix in
//! `--public-url`). From a peer in a trusted network only, the client's
//! address comes from `X-Forwarded-For` (or, without it, `Forwarded`,
//! RFC 7239): the rightmost hop that is not a trusted proxy, since every
//! hop to its left was written by someone spool does not trust. The
//! address is what per-client limits, logs and admin checks use; a
//! proxied request is never an admin by loopback. Requests arrive with or
//! without the public URL's path prefix (proxies that strip it and those
//! that do not); spool answers both.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Uri};
use ipnet::IpNet;

/// What the listeners know of the proxies in front of them. Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Front {
    /// `--trusted-proxies`.
    pub trusted: Arc<Vec<IpNet>>,
    /// The path of `--public-url` without its trailing `/` ("" for none).
    pub prefix: Arc<str>,
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
        let hops = hops(headers);
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
}

/// The path prefix of a public URL: `https://home.lan/spool/` gives
/// `/spool`; none gives "".
pub(crate) fn prefix_of(public_url: &str) -> String {
    url::Url::parse(public_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// Whether a request carries a forwarding header (a proxy always adds
/// one).
pub(crate) fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key("x-forwarded-for") || headers.contains_key(http::header::FORWARDED)
}

/// The entries of comma-separated header values, each read on its own:
/// bytes a client put before a proxy's hop cannot spoil that hop.
fn entries<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> Vec<String> {
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|e| String::from_utf8_lossy(e).trim().to_owned())
        .collect()
}

/// The hops a forwarding header names, leftmost first; None for an entry
/// that is no address.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff = entries(headers.get_all("x-forwarded-for").iter());
    if !xff.is_empty() {
        return xff.iter().map(|h| address(h)).collect();
    }
    entries(headers.get_all(http::header::FORWARDED).iter())
        .into_iter()
        .filter_map(|element| {
            // `for=` of each element; an element without one says nothing
            // of the client.
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| address(v.trim().trim_matches('"')))
            })
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
            (&[("forwarded", "for=_hidden")], "127.0.0.1"),
            // X-Forwarded-For first: a Forwarded the client sent is not read.
            (
                &[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                "203.0.113.9",
            ),
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
