//! Command line and environment configuration.
//!
//! Every flag has an environment twin (`SPOOL_<FLAG>`), so the same settings
//! work from a shell, a systemd unit or a docker compose file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::upstream::allow::AllowList;

#[derive(Debug, Parser)]
#[command(name = "spool", version, about = "A caching media streaming proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve media through the cache (the default).
    Serve(Box<Config>),
    /// Check every chunk against the index (length and checksum); exit 0
    /// when clean, 1 when problems were found.
    Verify {
        #[command(flatten)]
        dir: CacheDir,
        /// Fix what is found: remove temp files, orphans and rows of
        /// missing files; quarantine bad chunks.
        #[arg(long)]
        repair: bool,
    },
    /// Print cache size, media and chunk counts, and the disk level.
    Stats {
        #[command(flatten)]
        dir: CacheDir,
        #[command(flatten)]
        thresholds: FreeSpace,
    },
    /// Print a signed, playable link for an upstream URL:
    /// `<public-url>/s/<token>/<file name>`. For a playlist or manifest
    /// (`.m3u8`, `.m3u`, `.mpd`) the token grants its directory, so that
    /// the segments it names play through the same link. Asks the running
    /// spool (`POST /sign` on its control plane); with none answering,
    /// signs with the key configured here.
    Sign {
        /// The upstream URL (http or https).
        url: String,
        /// Grant the URL's whole directory (the default for playlists and
        /// manifests).
        #[arg(long, conflicts_with = "file")]
        directory: bool,
        /// Grant this one file only, even for a playlist or manifest.
        #[arg(long)]
        file: bool,
        /// How long the link works: a duration (30d, 12h) or `never`.
        #[arg(long, default_value = "30d", value_parser = crate::signing::parse_expires)]
        expires: crate::signing::Expiry,
        #[command(flatten)]
        signing: Signing,
        /// Address spool listens on (for the default public URL).
        #[arg(long, env = "SPOOL_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the cached media: how much of each is cached, size, last
    /// access. Asks the running spool (admin API); with no spool
    /// answering, reads the index read-only.
    Ls {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        dir: CacheDir,
    },
    /// Warm media into a running spool's cache, with progress. Run again
    /// after an interruption: only what is still missing is fetched.
    Prefetch {
        /// Upstream URLs (http or https).
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask a running spool whether it is alive (`/health/live`); exit 0
    /// when it answers 200, 1 otherwise. For container health checks, so
    /// the image needs no curl.
    Healthcheck {
        /// The address spool listens on; an unspecified address
        /// (0.0.0.0, ::) is asked on loopback.
        #[arg(long, env = "SPOOL_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The address of spool's control plane, asked first (its own
        /// connection limits: a flood of media connections does not hide
        /// a live spool); empty to ask the media listener only.
        #[arg(long, env = "SPOOL_ADMIN_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_optional_addr)]
        admin_listen: OptionalAddr,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The server's settings file, for its listen address.
        #[arg(long, env = "SPOOL_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// How a command reaches a running spool's control plane.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The address spool's control plane listens on (its
    /// `--admin-listen`); an unspecified address (0.0.0.0, ::) is asked
    /// on loopback.
    #[arg(long, env = "SPOOL_ADMIN_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_optional_addr)]
    pub admin_listen: OptionalAddr,
    /// The server's admin token (not needed on loopback when the control
    /// plane listens on loopback).
    #[arg(long, env = "SPOOL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The server's settings file, for the settings above.
    #[arg(long, env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Where the key for signed links comes from.
#[derive(Debug, Clone, Args, Default)]
pub struct Signing {
    /// Secret for signed links (at least 16 bytes, e.g. `openssl rand
    /// -hex 32`). With a key, unsigned `/stream?url=` is served only for
    /// upstreams named in `--allow-upstream`.
    #[arg(long, env = "SPOOL_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Key file for signed links, created (mode 0600) on first start when
    /// missing. Used when `--secret` is not given.
    #[arg(long, env = "SPOOL_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// The address players use to reach spool, for the links `spool sign`
    /// and `POST /sign` print (default: http://<listen>).
    #[arg(long, env = "SPOOL_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Signing {
    /// Where players reach a spool listening on `listen`.
    pub fn public_url(&self, listen: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", local_address(listen)),
        }
    }

    /// The configured key, if any (reading or creating the key file).
    /// Blocking.
    pub fn key(&self) -> anyhow::Result<Option<crate::signing::Key>> {
        use anyhow::Context;
        if let Some(s) = &self.secret {
            return crate::signing::Key::from_secret(s.as_bytes())
                .context("SPOOL_SECRET / --secret")
                .map(Some);
        }
        match &self.secret_file {
            Some(path) => crate::signing::Key::load_or_create(path).map(Some),
            None => Ok(None),
        }
    }
}

/// One `[[upstream]]` table of the settings file: headers sent with
/// requests of signed links to one origin (scheme, host, port) and to no
/// other, such as an `Authorization` or `X-Emby-Token` for a NAS; and the
/// hosts its redirects may lead to beyond what a link's rule allows (a CDN
/// that redirects to its storage hosts).
#[derive(Clone)]
pub struct UpstreamTable {
    pub origin: url::Origin,
    pub headers: http::HeaderMap,
    /// Host names, lower case; `*.example.com` for any name below
    /// `example.com`.
    pub redirect_hosts: Vec<String>,
}

impl std::fmt::Debug for UpstreamTable {
    /// Names only: the values are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTable")
            .field("origin", &self.origin.ascii_serialization())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("redirect_hosts", &self.redirect_hosts)
            .finish()
    }
}

#[derive(Debug, Clone, Args)]
pub struct CacheDir {
    /// Cache directory; the index lives at <cache-dir>/index.db.
    #[arg(long, env = "SPOOL_CACHE_DIR", default_value = "spool-cache")]
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct FreeSpace {
    /// Free space (percent of the cache filesystem) below which the disk
    /// level is Critical and the cache is cleaned up.
    #[arg(long, env = "SPOOL_MIN_FREE_PERCENT", default_value_t = 5.0)]
    pub min_free_percent: f64,

    /// Free space (bytes) below which the disk level is Critical.
    #[arg(long, env = "SPOOL_MIN_FREE_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// A settings file (TOML; keys are the flags' long names, plus
    /// `[[upstream]]` tables of request headers per origin). Flags win over
    /// the environment, the environment over the file, the file over the
    /// defaults.
    #[arg(long, env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on. An address beyond loopback needs a key
    /// (`--secret`, `--secret-file`) or an `--allow-upstream` list.
    #[arg(long, env = "SPOOL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub signing: Signing,

    /// Address of the control plane: the status page, the admin API
    /// (`/api/…`), `/metrics`, `POST /sign` and the detailed
    /// `/health/ready`. Kept apart from `--listen`, so that nothing spool
    /// proxies ever shares an origin with it. Empty turns it off.
    #[arg(long, env = "SPOOL_ADMIN_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_optional_addr)]
    pub admin_listen: OptionalAddr,

    /// Host names the control plane answers to besides address literals
    /// and `localhost` (e.g. the name a reverse proxy forwards for it),
    /// comma separated; also the origins its state-changing requests may
    /// come from. Any other `Host` is refused (DNS rebinding).
    #[arg(long, env = "SPOOL_ADMIN_HOST", value_delimiter = ',')]
    pub admin_host: Vec<String>,

    /// Token for the control plane (`--admin-listen`), sent as
    /// `Authorization: Bearer`. Without it the control plane answers
    /// loopback clients only, and only when it listens on loopback.
    #[arg(long, env = "SPOOL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Serve types a browser would run as a page (HTML, XHTML, SVG, XML)
    /// inline rather than as downloads (`Content-Disposition:
    /// attachment`). Either way every media answer is sandboxed
    /// (`Content-Security-Policy: sandbox`) and never sniffed.
    #[arg(long, env = "SPOOL_INLINE_DOCUMENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub inline_documents: bool,

    /// `Access-Control-Allow-Origin` on media answers, so pages on other
    /// origins can fetch ranges and play `<video crossorigin>`; `*` (spool
    /// uses no cookies), one origin (`https://app.lan`), or empty for none.
    #[arg(long, env = "SPOOL_CORS_ORIGIN", default_value = "*")]
    pub cors_origin: String,

    /// `[[upstream]]` tables (request headers, redirect hosts per origin),
    /// from the settings file only.
    #[arg(skip)]
    pub upstream_tables: Vec<UpstreamTable>,

    /// Cache directory; the index lives at <cache-dir>/index.db.
    #[arg(long, env = "SPOOL_CACHE_DIR", default_value = "spool-cache")]
    pub cache_dir: PathBuf,

    /// Size of one cached chunk (e.g. 1MiB, 4MiB, 1048576). A cold seek
    /// costs the origin about one chunk, and a player starting cold holds
    /// one in memory until it is written. Media already cached keep the
    /// chunk size they were cached with.
    #[arg(long, env = "SPOOL_CHUNK_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub chunk_size: u64,

    /// How far ahead of the playhead is fetched at most while a player
    /// reads: bytes ("32MiB"), or a time of media ("30s", "2min") where the
    /// media's byte rate is known from its container or from a player
    /// seen reading at its own pace (otherwise 32MiB),
    /// bounded by --read-ahead-limit. A player's window starts once it has
    /// read past its first 512 KiB and grows with what it reads, up to this.
    #[arg(long, env = "SPOOL_READ_AHEAD", default_value = "32MiB", value_parser = ReadAhead::parse)]
    pub read_ahead: ReadAhead,

    /// The most bytes a read-ahead given as a time may reach.
    #[arg(long, env = "SPOOL_READ_AHEAD_LIMIT", default_value = "256MiB", value_parser = parse_size)]
    pub read_ahead_limit: u64,

    /// On the first open of an MP4 whose index (moov) follows its media
    /// data, or of an MKV/WebM file, fetch the index at once, beside the
    /// player's first range ("true" or "false").
    #[arg(long, env = "SPOOL_INDEX_FIRST", default_value_t = true, action = clap::ArgAction::Set)]
    pub index_first: bool,

    /// How long read-ahead goes on for a position no player reads any more
    /// (after a seek or a disconnect).
    #[arg(long, env = "SPOOL_READ_AHEAD_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub read_ahead_grace: Duration,

    /// Upstream destinations allowed although they are loopback, private,
    /// link-local or metadata addresses: hosts, host:port or CIDRs, comma
    /// separated (e.g. "nas.lan,192.168.1.0/24,127.0.0.1:8000").
    #[arg(long, env = "SPOOL_ALLOW_UPSTREAM", default_value = "", value_parser = AllowList::parse)]
    pub allow_upstream: AllowList,

    /// Time allowed to connect to the origin.
    #[arg(long, env = "SPOOL_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for the origin to answer a request, and the longest
    /// silence tolerated inside a response body.
    #[arg(long, env = "SPOOL_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// How long the origin's validators (ETag, Last-Modified, size) are
    /// trusted before they are checked again with a one-byte request.
    #[arg(long, env = "SPOOL_REVALIDATE_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
    pub revalidate_after: Duration,

    /// Largest media size an origin may claim; a larger claim is refused
    /// with 502 (no sane media file is larger, and a hostile origin may
    /// claim anything).
    #[arg(long, env = "SPOOL_MAX_MEDIA_SIZE", default_value = "4TiB", value_parser = parse_size)]
    pub max_media_size: u64,

    /// For origins that ignore Range: the most bytes spool downloads and
    /// drops to reach a player's position. A seek further into a part not
    /// yet cached is answered 502.
    #[arg(long, env = "SPOOL_MAX_SKIP", default_value = "128MiB", value_parser = parse_size)]
    pub max_skip: u64,

    /// Client connections open at once; more are closed at once.
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Client connections open at once from one address.
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 64)]
    pub max_connections_per_client: usize,

    /// Time for a request's headers to arrive; also how long a keep-alive
    /// connection may stay idle between requests.
    #[arg(long, env = "SPOOL_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Most bytes of a response that may wait unsent in a client
    /// connection's socket (TCP_NOTSENT_LOWAT; bytes in flight to the
    /// player are not counted, so a fast link is not slowed). What a slow
    /// player holds in the kernel, and what spool has sent ahead of what a
    /// player read: a seek preview that closes costs the origin less. 0
    /// keeps the system's default (the kernel's own socket buffers).
    #[arg(long, env = "SPOOL_SEND_QUEUE", default_value = "128KiB", value_parser = parse_size)]
    pub send_queue: u64,

    /// How long a player may take no bytes before its stream is closed and
    /// what it holds freed (a paused player reconnects with a range).
    #[arg(long, env = "SPOOL_WRITE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Response bodies streaming at once; more get 503 with Retry-After.
    #[arg(long, env = "SPOOL_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: usize,

    /// Download runs (upstream transfers) at once; more wait for a place
    /// (their players wait with them).
    #[arg(long, env = "SPOOL_MAX_DOWNLOADS", default_value_t = 64)]
    pub max_downloads: usize,

    /// Most ranges in one request's Range header; a request with more gets
    /// the whole body (200). Overlapping and adjacent ranges are merged.
    #[arg(long, env = "SPOOL_MAX_RANGES", default_value_t = 16)]
    pub max_ranges: usize,

    /// Redirects followed before giving up.
    #[arg(long, env = "SPOOL_MAX_REDIRECTS", default_value_t = 10)]
    pub max_redirects: usize,

    /// Times a broken upstream transfer is resumed from the byte it reached.
    #[arg(long, env = "SPOOL_UPSTREAM_RETRIES", default_value_t = 3)]
    pub upstream_retries: u32,

    #[command(flatten)]
    pub free_space: FreeSpace,

    /// When the disk is critical, clean up until this much more than the
    /// critical threshold is free.
    #[arg(long, env = "SPOOL_CLEANUP_HEADROOM", default_value = "1GiB", value_parser = parse_size)]
    pub cleanup_headroom: u64,

    /// Largest size of the cache (0: no limit but the disk's free space).
    /// Past it, least-recently-used chunks are evicted down to 90% of it.
    #[arg(long, env = "SPOOL_MAX_CACHE_SIZE", default_value = "0", value_parser = parse_size)]
    pub max_cache_size: u64,

    /// Media with nothing cached (all chunks evicted, or only probed) that
    /// nobody read for this long are removed from the index, so it stays
    /// proportional to what is cached.
    #[arg(long, env = "SPOOL_FORGET_MEDIA_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
    pub forget_media_after: Duration,

    /// How often the free space of the cache's filesystem is sampled.
    #[arg(long, env = "SPOOL_DISK_CHECK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub disk_check_interval: Duration,

    /// Memory for complete chunks that could not be written to disk
    /// (caching paused or a write failed), so re-reads stay local.
    #[arg(long, env = "SPOOL_MEMORY_CACHE", default_value = "256MiB", value_parser = parse_size)]
    pub memory_cache: u64,

    /// Consecutive IO write failures that pause caching.
    #[arg(long, env = "SPOOL_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,

    /// How long caching stays paused after write failures before a probe
    /// write tries again.
    #[arg(long, env = "SPOOL_BREAKER_COOL_DOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub breaker_cool_down: Duration,

    /// How often every cached chunk is checked against its checksum in the
    /// background (chunks are also checked on their first read after
    /// start-up). 0 turns the background check off.
    #[arg(long, env = "SPOOL_SCRUB_INTERVAL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub scrub_interval: Duration,

    /// Most bytes a second the background check reads, so it never
    /// competes with players for the disk (0: no limit).
    #[arg(long, env = "SPOOL_SCRUB_RATE", default_value = "64MiB", value_parser = parse_size)]
    pub scrub_rate: u64,

    /// On SIGTERM/SIGINT: how long running streams may go on before they
    /// are cut and spool exits.
    #[arg(long, env = "SPOOL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// fsync every chunk file before it is renamed into place. Off by
    /// default: chunk checksums already catch a chunk torn by a power cut.
    #[arg(long, env = "SPOOL_FSYNC_CHUNKS", default_value_t = false)]
    pub fsync_chunks: bool,
}

impl Config {
    /// The defaults, with the given cache directory: for tests and
    /// embedding. The process environment (`SPOOL_*`) is not read, and
    /// nothing here exits the process.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Cli::command().mut_args(|a| a.env(None::<&str>));
        let matches = cmd
            .try_get_matches_from(["spool"])
            .expect("spool's defaults parse");
        let mut cfg = Config::from_arg_matches(&matches).expect("spool's defaults are valid");
        cfg.cache_dir = cache_dir.into();
        cfg
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_in_bytes_or_time() {
        assert_eq!(ReadAhead::parse("32MiB"), Ok(ReadAhead::Bytes(32 << 20)));
        assert_eq!(ReadAhead::parse("1m"), Ok(ReadAhead::Bytes(1 << 20)));
        assert_eq!(
            ReadAhead::parse("30s"),
            Ok(ReadAhead::Time(Duration::from_secs(30)))
        );
        assert_eq!(
            ReadAhead::parse("2min"),
            Ok(ReadAhead::Time(Duration::from_secs(120)))
        );
        let err = ReadAhead::parse("lots").unwrap_err();
        assert!(err.contains("30s"), "{err}");
        assert_eq!(ReadAhead::Time(Duration::from_secs(1)).max_bytes(7), 7);
        assert_eq!(ReadAhead::Bytes(5).max_bytes(7), 5);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size(".").is_err());
        assert!(parse_size("1.2.3").is_err());
        assert_eq!(parse_size("0.5"), Ok(0));
        assert_eq!(parse_size(".5k"), Ok(512));
        // Above 2^53 an f64 loses bytes; these stay exact.
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_size("18446744073709551616").is_err());
        assert_eq!(
            parse_size("16777215.999999999TiB"),
            Ok(18_446_744_073_709_550_516)
        );
        assert!(parse_size("16777216TiB").is_err());
    }

    #[test]
    fn defaults() {
        let cfg = Config::new("/tmp/x");
        assert_eq!(cfg.chunk_size, 1 << 20);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cfg.admin_listen,
            OptionalAddr(Some("127.0.0.1:8081".parse().unwrap()))
        );
        assert!(!cfg.inline_documents);
    }

    #[test]
    fn admin_listener_can_be_turned_off() {
        let cli = Cli::parse_from(["spool", "--admin-listen", ""]);
        assert_eq!(cli.serve.admin_listen, OptionalAddr(None));
        let cli = Cli::parse_from(["spool", "--admin-listen", "0.0.0.0:9"]);
        assert_eq!(cli.serve.admin_listen.0.unwrap().port(), 9);
        assert!(Cli::try_parse_from(["spool", "--admin-listen", "nowhere"]).is_err());
        let cli = Cli::parse_from(["spool", "--admin-host", "spool.lan,Admin.Example:8443"]);
        assert_eq!(cli.serve.admin_host, ["spool.lan", "Admin.Example:8443"]);
    }

    /// Library code neither reads `SPOOL_*` for a test's config nor exits
    /// the process on a bad one. Runs in a child process, so the variable
    /// set there cannot leak into other tests.
    #[test]
    fn defaults_ignore_the_environment() {
        if std::env::var_os("SPOOL_TEST_CONFIG_CHILD").is_some() {
            let cfg = Config::new("/tmp/x");
            assert_eq!(cfg.chunk_size, 1 << 20);
            assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
            return;
        }
        rerun_in_child(
            "config::tests::defaults_ignore_the_environment",
            &[
                ("SPOOL_TEST_CONFIG_CHILD", "1"),
                ("SPOOL_CHUNK_SIZE", "not a size"),
                ("SPOOL_LISTEN", "0.0.0.0:1"),
            ],
        );
    }

    #[test]
    fn subcommand_and_bare_flags() {
        let cli = Cli::parse_from(["spool", "serve", "--chunk-size", "4MiB"]);
        assert!(matches!(cli.command, Some(Command::Serve(c)) if c.chunk_size == 4 << 20));
        let cli = Cli::parse_from(["spool", "--chunk-size", "2MiB"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.chunk_size, 2 << 20);
    }
}
