//! Who may use the control plane (`--admin-listen`): the status page, the
//! admin API, `/metrics`, `POST /sign`, the detailed readiness answer.
//!
//! The control plane has a listener of its own, so no byte spool proxies
//! is ever served from its origin: a page an upstream sends runs, if at
//! all, on the media listener's origin, which holds nothing to steal.
//! Three checks guard it (the model is Caddy's admin endpoint):
//!
//! - **Host** (every request): an address literal, `localhost`, or a name
//!   `--admin-host` lists. A page whose name was rebound to spool's
//!   address (DNS rebinding) sends its own name and is refused; a literal
//!   address cannot be rebound.
//! - **Origin** (every request that changes state): absent (a command
//!   line client), the control plane's own origin (the status page), or
//!   one `--admin-host` names. A page on another origin is refused even
//!   where its request would carry no credential (loopback trust).
//! - **The admin right**: `Authorization: Bearer <SPOOL_ADMIN_TOKEN>`
//!   (compared in constant time), or a loopback client when the control
//!   plane listens on loopback. Listening beyond loopback, loopback
//!   clients are not trusted: behind a port forwarder (rootless
//!   containers) or a proxy on the same host, every client arrives from
//!   loopback.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderMap, Method};
use subtle::ConstantTimeEq;

/// The client's address, put on every request by the listener: the
/// connection's peer, or the client a trusted proxy forwarded for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub addr: IpAddr,
    /// Whether the request came through a trusted proxy.
    pub proxied: bool,
}

impl Peer {
    /// A client connected directly.
    #[cfg(test)]
    pub fn direct(addr: IpAddr) -> Peer {
        Peer {
            addr,
            proxied: false,
        }
    }
}

/// The control plane's rules. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Control {
    /// Never empty (an empty token is no token).
    pub admin_token: Option<Arc<str>>,
    /// Whether loopback clients are admins: only when the control plane
    /// listens on loopback.
    pub trust_loopback: bool,
    /// `--admin-host` entries, lower case: `host` or `host:port`.
    pub hosts: Arc<Vec<String>>,
}

/// Why a request to the control plane is refused before it is read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A `Host` the control plane does not answer to.
    Host(String),
    /// A state-changing request from a page on another origin.
    Origin(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Host(h) => write!(
                f,
                "Host {h:?} is not this control plane's: use its address, localhost, \
                 or a name given to --admin-host"
            ),
            Refused::Origin(o) => write!(
                f,
                "requests from the page origin {o:?} may not change anything here \
                 (add it to --admin-host if it is yours)"
            ),
        }
    }
}

impl Control {
    /// Whether a request may use the admin endpoints: from loopback (when
    /// trusted), or with the admin token.
    pub fn admin(&self, peer: Option<Peer>, headers: &HeaderMap) -> bool {
        // Through a proxy on this host, every client arrives from loopback.
        let local = peer.is_some_and(|p| !p.proxied && p.addr.to_canonical().is_loopback());
        if self.trust_loopback && local {
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

    /// The Host and Origin checks, before anything else is looked at.
    pub fn guard(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refused> {
        let host = request_host(headers);
        if !self.host_allowed(&host) {
            return Err(Refused::Host(host));
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        if changes {
            if let Some(origin) = headers.get(header::ORIGIN) {
                let o = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
                if !self.origin_allowed(&o, &host) {
                    return Err(Refused::Origin(o));
                }
            }
        }
        Ok(())
    }

    /// An address literal, `localhost`, or an `--admin-host` entry (with
    /// or without the port it names).
    fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name == "localhost" || name.parse::<IpAddr>().is_ok() {
            return true;
        }
        self.hosts
            .iter()
            .any(|h| h == host || (!h.contains(':') && host_name(h).is_some_and(|n| n == name)))
    }

    /// The control plane's own origin (the Host the request was sent to),
    /// or an `--admin-host` entry's: a name alone is its origin on the
    /// scheme's default port (another port is another site, perhaps
    /// another application); `name:port` names that port.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let Some(authority) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            // `null` (a sandboxed page, a file) or nonsense.
            return false;
        };
        if authority.contains(['/', '@']) {
            return false;
        }
        authority == host || self.hosts.iter().any(|h| h == authority)
    }
}

/// A request's `Host`, trimmed and lower case ("" when it has none).
pub(crate) fn request_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The name or address of a `Host` value, without its port; brackets
/// stripped from an IPv6 literal. None when it is not one.
pub(crate) fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        return (after.is_empty() || valid_port(after.strip_prefix(':')?)).then_some(addr);
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if port.is_some_and(|p| !valid_port(p)) || name.is_empty() {
        return None;
    }
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .then_some(name)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn control(hosts: &[&str]) -> Control {
        Control {
            hosts: Arc::new(hosts.iter().map(|h| h.to_string()).collect()),
            ..Control::default()
        }
    }

    #[test]
    fn hosts() {
        let c = control(&["spool.lan", "admin.example:8443"]);
        for ok in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "[::1]:8081",
            "[::1]",
            "192.168.1.5:8081",
            "localhost:8081",
            "LOCALHOST",
            "spool.lan",
            "spool.lan:8081",
            "admin.example:8443",
        ] {
            let h = headers(&[("host", ok)]);
            assert_eq!(c.guard(&Method::GET, &h), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "attacker.example",
            "attacker.example:8081",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "admin.example",
            "admin.example:9",
            "spool.lan:x",
            "[::1",
            "a b",
        ] {
            let h = headers(&[("host", bad)]);
            assert!(
                matches!(c.guard(&Method::GET, &h), Err(Refused::Host(_))),
                "{bad}"
            );
        }
        // No Host at all (HTTP/1.0) is refused too.
        assert!(c.guard(&Method::GET, &HeaderMap::new()).is_err());
    }

    #[test]
    fn origins_of_state_changes() {
        let c = control(&["spool.lan"]);
        let with = |origin: &str| headers(&[("host", "127.0.0.1:8081"), ("origin", origin)]);
        // Reads are judged by Host only: the same-origin policy keeps
        // their answers from other pages.
        assert_eq!(c.guard(&Method::GET, &with("http://evil.example")), Ok(()));
        for ok in [
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8081",
            "http://spool.lan",
            "https://spool.lan",
        ] {
            assert_eq!(c.guard(&Method::POST, &with(ok)), Ok(()), "{ok}");
        }
        // With its port named, that port's origin.
        let ported = control(&["spool.lan:444"]);
        assert_eq!(
            ported.guard(&Method::POST, &with("https://spool.lan:444")),
            Ok(())
        );
        assert!(ported
            .guard(&Method::POST, &with("https://spool.lan"))
            .is_err());
        for bad in [
            // Another port of the name: another site.
            "https://spool.lan:444",
            "http://spool.lan:8000",
            "http://evil.example",
            "http://127.0.0.1:8080",
            "http://localhost:8081",
            "null",
            "file://",
            "http://spool.lan@evil.example",
        ] {
            assert!(
                matches!(c.guard(&Method::POST, &with(bad)), Err(Refused::Origin(_))),
                "{bad}"
            );
            assert!(c.guard(&Method::DELETE, &with(bad)).is_err(), "{bad}");
        }
        // A command line client sends no Origin.
        let h = headers(&[("host", "127.0.0.1:8081")]);
        assert_eq!(c.guard(&Method::POST, &h), Ok(()));
    }

    #[test]
    fn admin_right() {
        let mut c = control(&[]);
        let lo = Some(Peer::direct("127.0.0.1".parse().unwrap()));
        let mapped = Some(Peer::direct("::ffff:127.0.0.1".parse().unwrap()));
        let lan = Some(Peer::direct("192.168.1.9".parse().unwrap()));
        let proxied = Some(Peer {
            addr: "127.0.0.1".parse().unwrap(),
            proxied: true,
        });
        assert!(!c.admin(lo, &HeaderMap::new()));
        c.trust_loopback = true;
        assert!(c.admin(lo, &HeaderMap::new()));
        assert!(c.admin(mapped, &HeaderMap::new()));
        assert!(!c.admin(lan, &HeaderMap::new()));
        assert!(
            !c.admin(proxied, &HeaderMap::new()),
            "through a proxy on this host, loopback is nobody"
        );
        c.admin_token = Some(Arc::from("0123456789abcdef"));
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        assert!(c.admin(lan, &bearer("0123456789abcdef")));
        assert!(!c.admin(lan, &bearer("0123456789abcdeX")));
        assert!(!c.admin(lan, &bearer("")));
        assert!(c.admin(proxied, &bearer("0123456789abcdef")));
    }
}
