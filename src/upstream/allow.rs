//! Which upstream destinations spool may connect to.
//!
//! A proxy that fetches any URL it is given can be turned against the
//! network it sits in (SSRF). By default spool refuses loopback, private,
//! link-local, metadata and other non-public addresses, judged on the
//! address the name resolves to, unless `--allow-upstream` names them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// A host name (lower case), any port.
    Host(String),
    /// A host name (lower case) on one port.
    HostPort(String, u16),
    /// A network (a single address is a /32 or /128), any port.
    Net(IpNet),
    /// A single address on one port.
    AddrPort(SocketAddr),
}

impl AllowList {
    /// Parses a comma separated list of hosts, host:port, addresses,
    /// address:port and CIDRs.
    pub fn parse(s: &str) -> Result<AllowList, String> {
        let mut entries = Vec::new();
        for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            entries.push(parse_entry(item)?);
        }
        Ok(AllowList { entries })
    }

    /// Whether a connection to `ip:port`, reached through the name `host`
    /// (the URL's host, lower case), may be made.
    pub fn permits(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        is_public(ip) || self.names(host, ip, Some(port))
    }

    /// Like `permits`, where the port is not known (spool's resolver, at
    /// connect time): only entries without a port count. A name whose
    /// address is allowed only on one port is connected to by that address
    /// (see `Upstream::route`), never through the resolver, so a DNS answer
    /// that changes between the check and the connection cannot reach
    /// another port.
    pub fn permits_any_port(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.names_unscoped(host, ip)
    }

    /// Whether an entry without a port names this host or address.
    fn names_unscoped(&self, host: &str, ip: IpAddr) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.entries.iter().any(|e| match e {
            Entry::Host(h) => h.eq_ignore_ascii_case(host),
            Entry::Net(net) => net.contains(&ip.to_canonical()),
            Entry::HostPort(..) | Entry::AddrPort(_) => false,
        })
    }

    /// Whether an entry names this URL's host as written (no DNS): a name
    /// by a host entry, an address literal by an address or network entry.
    /// Decides which upstreams unsigned links may use when spool requires
    /// signed links; a name resolving into an allowed network does not
    /// count, or any DNS name could be made to.
    pub fn lists(&self, url: &url::Url) -> bool {
        let port = url.port_or_known_default().unwrap_or(80);
        let port_ok = |p: u16| p == port;
        match url.host() {
            Some(url::Host::Domain(host)) => self.entries.iter().any(|e| match e {
                Entry::Host(h) => h.eq_ignore_ascii_case(host),
                Entry::HostPort(h, p) => port_ok(*p) && h.eq_ignore_ascii_case(host),
                Entry::Net(_) | Entry::AddrPort(_) => false,
            }),
            Some(url::Host::Ipv4(ip)) => self.names_literal(IpAddr::V4(ip), port),
            Some(url::Host::Ipv6(ip)) => self.names_literal(IpAddr::V6(ip), port),
            None => false,
        }
    }

    fn names_literal(&self, ip: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Net(net) => net.contains(&ip.to_canonical()),
            Entry::AddrPort(sa) => sa.port() == port && sa.ip().to_canonical() == ip.to_canonical(),
            Entry::Host(_) | Entry::HostPort(..) => false,
        })
    }

    /// Whether `url` names an address literal these rules refuse (no
    /// lookup: a name is judged when it is resolved).
    pub fn refuses_literal(&self, url: &url::Url) -> bool {
        let ip: IpAddr = match url.host() {
            Some(url::Host::Ipv4(v4)) => v4.into(),
            Some(url::Host::Ipv6(v6)) => v6.into(),
            _ => return false,
        };
        let port = url.port_or_known_default().unwrap_or(80);
        !self.permits(url.host_str().unwrap_or_default(), ip, port)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any entry names a port.
    pub fn has_port_entries(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::HostPort(..) | Entry::AddrPort(_)))
    }

    fn names(&self, host: &str, ip: IpAddr, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port_ok = |p: u16| port.is_none_or(|port| port == p);
        self.entries.iter().any(|e| match e {
            Entry::Host(h) => h.eq_ignore_ascii_case(host),
            Entry::HostPort(h, p) => port_ok(*p) && h.eq_ignore_ascii_case(host),
            Entry::Net(net) => net.contains(&ip.to_canonical()),
            Entry::AddrPort(sa) => {
                port_ok(sa.port()) && sa.ip().to_canonical() == ip.to_canonical()
            }
        })
    }
}

fn parse_entry(item: &str) -> Result<Entry, String> {
    if let Ok(net) = item.parse::<IpNet>() {
        return Ok(Entry::Net(net));
    }
    if let Ok(ip) = item
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Entry::Net(IpNet::from(ip)));
    }
    if let Ok(sa) = item.parse::<SocketAddr>() {
        return Ok(Entry::AddrPort(sa));
    }
    let valid_name = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if let Some((host, port)) = item.rsplit_once(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad port in allow-upstream entry {item:?}"))?;
        if valid_name(host) {
            return Ok(Entry::HostPort(host.to_ascii_lowercase(), port));
        }
    } else if valid_name(item) {
        return Ok(Entry::Host(item.to_ascii_lowercase()));
    }
    Err(format!(
        "allow-upstream entry {item:?} is neither a host, host:port nor a CIDR"
    ))
}

/// Whether an address is on the public internet: not loopback, private,
/// shared (CGNAT), link-local (cloud metadata services live there),
/// unspecified, multicast, broadcast, documentation or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 metadata among them
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 can reach private IPv4
}

#[cfg(test)]
mod tests {

    #[test]
    fn lists_names_the_host_as_written() {
        let l = AllowList::parse("nas.lan,jelly.lan:8096,192.168.1.0/24,10.0.0.5:80").unwrap();
        let yes = |u: &str| l.lists(&url::Url::parse(u).unwrap());
        assert!(yes("http://nas.lan/a.mp4"));
        assert!(yes("http://NAS.lan:9000/a.mp4"));
        assert!(yes("http://jelly.lan:8096/a"));
        assert!(!yes("http://jelly.lan:8097/a"));
        assert!(yes("http://192.168.1.77/a"));
        assert!(yes("http://10.0.0.5/a"));
        assert!(!yes("http://10.0.0.5:81/a"));
        assert!(!yes("http://example.com/a"));
        assert!(!yes("http://192.168.2.1/a"));
        assert!(!AllowList::default().lists(&url::Url::parse("http://nas.lan/").unwrap()));
    }
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_refuses_internal_addresses() {
        let none = AllowList::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!none.permits("h", ip(a), 80), "{a} must be refused");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(none.permits("h", ip(a), 80), "{a} must be allowed");
        }
    }

    #[test]
    fn entries() {
        let list =
            AllowList::parse("nas.lan, media.lan:8000,192.168.1.0/24,127.0.0.1:9000,::1").unwrap();
        assert!(list.permits("nas.lan", ip("192.168.7.7"), 1));
        assert!(list.permits("NAS.LAN", ip("10.0.0.1"), 443));
        assert!(list.permits("media.lan", ip("10.0.0.1"), 8000));
        assert!(!list.permits("media.lan", ip("10.0.0.1"), 8001));
        assert!(list.permits("x", ip("192.168.1.200"), 80));
        assert!(!list.permits("x", ip("192.168.2.1"), 80));
        assert!(list.permits("x", ip("127.0.0.1"), 9000));
        assert!(!list.permits("x", ip("127.0.0.1"), 9001));
        assert!(list.permits("x", ip("::1"), 1));
        assert!(list.permits("[::1]", ip("::1"), 1));
        let single = AllowList::parse("127.0.0.1").unwrap();
        assert!(single.permits("localhost", ip("127.0.0.1"), 1234));
        assert!(single.permits("x", ip("::ffff:127.0.0.1"), 1234));
    }

    /// At connect time (port unknown), an entry with a port allows
    /// nothing: a name rebound to 127.0.0.1 after its check must not reach
    /// 127.0.0.1's other ports through an entry for one of them.
    #[test]
    fn entries_with_a_port_do_not_count_without_one() {
        let list = AllowList::parse("127.0.0.1:8000,media.lan:9000,nas.lan,10.0.0.0/8").unwrap();
        assert!(!list.permits_any_port("evil.example", ip("127.0.0.1")));
        assert!(!list.permits_any_port("media.lan", ip("192.168.1.5")));
        assert!(list.permits_any_port("nas.lan", ip("192.168.1.5")));
        assert!(list.permits_any_port("x", ip("10.1.2.3")));
        assert!(list.permits_any_port("x", ip("1.1.1.1")));
        assert!(list.has_port_entries());
        assert!(!AllowList::parse("nas.lan").unwrap().has_port_entries());
    }

    #[test]
    fn bad_entries_are_errors() {
        assert!(AllowList::parse("not a host").is_err());
        assert!(AllowList::parse("host:port").is_err());
        assert!(AllowList::parse("10.0.0.0/99").is_err());
        assert!(AllowList::parse("").unwrap().entries.is_empty());
    }

    proptest::proptest! {
        /// Any allow-upstream value parses or is refused; with any list, a
        /// non-public address is allowed only when an entry names it, and
        /// a public one always is.
        #[test]
        fn fuzz_allowlist(
            list in "([a-z0-9.:/\\[\\]-]{0,20},?){0,4}|.{0,40}",
            host in "[a-z0-9.-]{1,20}",
            a in proptest::num::u32::ANY,
            port in proptest::num::u16::ANY,
        ) {
            let ip = IpAddr::V4(Ipv4Addr::from(a));
            let none = AllowList::default();
            proptest::prop_assert_eq!(none.permits(&host, ip, port), is_public(ip));
            if let Ok(allow) = AllowList::parse(&list) {
                if is_public(ip) {
                    proptest::prop_assert!(allow.permits(&host, ip, port));
                }
                // What the resolver lets through (port unknown) is allowed on
                // every port.
                if allow.permits_any_port(&host, ip) {
                    proptest::prop_assert!(allow.permits(&host, ip, port));
                }
            }
        }
    }
}
