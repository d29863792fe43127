//! `spool serve`'s settings: every flag with its environment twin.

use clap::builder::TypedValueParser as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::upstream::allow::AllowList;
use crate::upstream::QueryFilter;

use super::groups::*;
use super::values::*;

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
    /// Query parameters not part of its media's identity, beyond
    /// `--cache-key-ignore-query`.
    pub cache_key_ignore_query: QueryFilter,
    /// Fill while watched for its media, over `--fill-while-watched`.
    pub fill_while_watched: Option<bool>,
}

impl std::fmt::Debug for UpstreamTable {
    /// Names only: the values are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTable")
            .field("origin", &self.origin.ascii_serialization())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("redirect_hosts", &self.redirect_hosts)
            .field("cache_key_ignore_query", &self.cache_key_ignore_query)
            .field("fill_while_watched", &self.fill_while_watched)
            .finish()
    }
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
    /// come from (a name alone: its default-port origin; `name:port`: that
    /// port's). Any other `Host` is refused (DNS rebinding).
    #[arg(long, env = "SPOOL_ADMIN_HOST", value_delimiter = ',')]
    pub admin_host: Vec<String>,

    /// Reverse proxies in front of spool: addresses or networks, comma
    /// separated. From these peers only, the client's address is read
    /// from `X-Forwarded-For` (or `Forwarded`), the rightmost hop that is
    /// not one of them; per-client limits, logs and admin checks use it,
    /// and no request through them is an admin by loopback.
    #[arg(long, env = "SPOOL_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The header those proxies write the client's address in
    /// (`x-forwarded-for` or `forwarded`). Only that one is read: a
    /// proxy passes the other on as the client wrote it.
    #[arg(long, env = "SPOOL_FORWARDED_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,

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

    /// Query parameters that are not part of a media's identity, comma
    /// separated, `*` matching any run of characters, ASCII case ignored
    /// (e.g. "X-Amz-*,Expires,token" for presigned S3/R2 URLs and CDN
    /// tokens). Two URLs that differ only there are one media, cached
    /// once; the newest URL that reached it is the one spool asks the
    /// origin with, and an older one when the origin refuses it.
    #[arg(long, env = "SPOOL_CACHE_KEY_IGNORE_QUERY", default_value = "", value_parser = QueryFilter::parse_list)]
    pub cache_key_ignore_query: QueryFilter,

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

    /// Send cached chunks with sendfile(2), from the file to the socket in
    /// the kernel, when their pages are in the page cache ("true" or
    /// "false"; false reads every byte into spool and writes it out, as
    /// for a filesystem whose sendfile misbehaves).
    #[arg(long, env = "SPOOL_SENDFILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub sendfile: bool,

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

    /// Ranged requests one media may fetch over at once when one transfer
    /// brings less than its players take (an origin that caps each
    /// connection, a distant one): the chunks ahead come over up to this
    /// many streams, and back over one when one suffices. 1: one stream.
    #[arg(long, env = "SPOOL_STREAMS_PER_MEDIA", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub streams_per_media: usize,

    /// Transfers from one origin host at once (scheme, host and port),
    /// all media together; more wait for a place. An origin answering 429,
    /// or 503 with Retry-After, gets the pause it asked for (up to 10 s)
    /// and half the streams per media, one coming back every 30 s.
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS_PER_ORIGIN", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub max_connections_per_origin: usize,

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

    /// Fill while watched: once a player has read a media for
    /// `--fill-after`, the rest of it is fetched in the background at
    /// `--fill-rate`, so the rest of the evening does not depend on the
    /// origin. Stopped by an admin (`DELETE /api/prefetch/{job}`), by
    /// `--max-cache-size` and by the disk's level; resumed after a restart.
    #[arg(long, env = "SPOOL_FILL_WHILE_WATCHED")]
    pub fill_while_watched: bool,

    /// How long a player reads a media before it is filled (with
    /// `--fill-while-watched`).
    #[arg(long, env = "SPOOL_FILL_AFTER", default_value = "2m", value_parser = humantime::parse_duration)]
    pub fill_after: Duration,

    /// Bytes per second that filling takes from one origin host at most,
    /// all its fills together.
    #[arg(long, env = "SPOOL_FILL_RATE", default_value = "4MiB", value_parser = parse_size)]
    pub fill_rate: u64,

    /// Media nobody read for this long (e.g. `90d`) are evicted, checked
    /// with the disk; never a pinned title's, never one a player has open.
    /// Default: off.
    #[arg(long, env = "SPOOL_MAX_AGE", value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,

    /// How long the index's history keeps events (evictions, failures,
    /// disk levels); older ones are pruned (0: kept for ever).
    #[arg(long, env = "SPOOL_EVENTS_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub events_retention: Duration,

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
    /// How spool talks to origins, from these settings.
    pub(crate) fn upstream_settings(&self) -> crate::upstream::Settings {
        use crate::upstream::{Limits, OriginRule, Rules, Settings};
        Settings {
            allow: self.allow_upstream.clone(),
            connect_timeout: self.connect_timeout,
            timeout: self.upstream_timeout,
            max_redirects: self.max_redirects,
            retries: self.upstream_retries,
            max_skip: self.max_skip,
            rules: Rules {
                origins: self
                    .upstream_tables
                    .iter()
                    .map(|t| OriginRule {
                        origin: t.origin.clone(),
                        headers: t.headers.clone(),
                        redirect_hosts: t.redirect_hosts.clone(),
                        cache_key_ignore_query: t.cache_key_ignore_query.clone(),
                        fill_while_watched: t.fill_while_watched,
                    })
                    .collect(),
                cache_key_ignore_query: self.cache_key_ignore_query.clone(),
            },
            limits: Limits {
                connections: self.max_connections_per_origin,
                streams: self.streams_per_media,
            },
        }
    }

    /// Whether fill while watched is on for some origin: for all
    /// (`--fill-while-watched`), or for one `[[upstream]]`.
    pub(crate) fn fills_anywhere(&self) -> bool {
        self.fill_while_watched
            || self
                .upstream_tables
                .iter()
                .any(|t| t.fill_while_watched == Some(true))
    }
}
