//! Values flags take: sizes, read-ahead in bytes or time, optional
//! addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// An address, or none (an empty value turns a listener off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// `""` (or `off`) for none, else an address such as `127.0.0.1:8081`.
pub fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s.trim() {
        "" | "off" | "none" => Ok(OptionalAddr(None)),
        a => a
            .parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|_| format!("{a:?} is not an address such as 127.0.0.1:8081 (empty: off)")),
    }
}

/// Where to reach a server listening on `listen`: an unspecified address
/// (listening on every interface) is reached on loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Parses a byte size: plain bytes or a number with a unit
/// (K, KB, KiB, M, MB, MiB, G, GB, GiB, T, ...; binary and decimal prefixes).
/// A fraction is allowed (`1.5GiB`); the result is rounded down to whole
/// bytes. Integer arithmetic throughout, so every size up to `u64::MAX`
/// is exact.
/// How far read-ahead reaches: bytes, or a time of media.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadAhead {
    Bytes(u64),
    Time(Duration),
}

/// As a person writes it: `32 MiB`, `30s`.
impl std::fmt::Display for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ReadAhead::Bytes(b) => write!(f, "{}", indicatif::BinaryBytes(b)),
            ReadAhead::Time(t) => write!(f, "{}", humantime::format_duration(t)),
        }
    }
}

/// The forwarding header trusted proxies write (`http/forwarded.rs`).
pub use crate::http::ForwardedHeader;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (colour only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

impl ReadAhead {
    /// A size ("32MiB", "1048576") or a time ("30s", "2min"; "1m" is a
    /// size).
    pub fn parse(s: &str) -> Result<ReadAhead, String> {
        match parse_size(s) {
            Ok(b) => Ok(ReadAhead::Bytes(b)),
            Err(size_err) => humantime::parse_duration(s.trim())
                .map(ReadAhead::Time)
                .map_err(|_| format!("{size_err}, or a time such as 30s")),
        }
    }

    /// The most bytes it may reach.
    pub fn max_bytes(&self, limit: u64) -> u64 {
        match *self {
            ReadAhead::Bytes(b) => b,
            ReadAhead::Time(_) => limit,
        }
    }
}

/// A network (`10.0.0.0/8`, `fd00::/8`) or one address (`127.0.0.1`).
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not an address or a network (try 127.0.0.1 or 10.0.0.0/8)"))
}

/// `--public-url`: an http(s) URL, with a path prefix when spool is served
/// below one (`https://home.lan/spool`), without query or fragment. A
/// prefix whose first segment is one of spool's own routes (`/p`, `/s`,
/// `/stream`, `/health`) is refused: a request arriving without the prefix
/// stripped could not be told from one to that route.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(format!("{s:?} is not an http(s) URL with a host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?}: a public URL has no query or fragment"));
    }
    let first = u
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    if ["p", "s", "stream", "health"].contains(&first) {
        return Err(format!(
            "{s:?}: a path prefix may not begin with /{first}, one of spool's own routes"
        ));
    }
    Ok(s.to_owned())
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a size (try 4MiB or 1048576)");
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad());
    }
    let mult: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let too_large = || format!("{s:?} is too large");
    let digits = |d: &str| -> Result<u128, String> {
        if d.is_empty() {
            return Ok(0);
        }
        d.parse::<u128>().map_err(|_| too_large())
    };
    // Beyond 30 fractional digits nothing can change the whole bytes.
    let frac = &frac[..frac.len().min(30)];
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = digits(whole)?
        .checked_mul(mult)
        .and_then(|w| w.checked_add(digits(frac).ok()? * mult / scale))
        .ok_or_else(too_large)?;
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Runs one unit test again in a child process with `env` set, and
/// fails if it fails there: for tests of what the environment does, whose
/// variables must not leak into other tests of this process.
#[cfg(test)]
pub(crate) fn rerun_in_child(test: &str, env: &[(&str, &str)]) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
