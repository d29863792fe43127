//! The command line: subcommands, and the flags the remote commands share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::groups::*;
use super::serve::Config;
use super::values::*;

#[derive(Debug, Parser)]
#[command(name = "spool", version, about = "A caching media streaming proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: Config,
    /// How log lines are written: text (colour only when stderr is a
    /// terminal) or json (one object per line). SPOOL_LOG sets what is
    /// logged (default info).
    #[arg(
        long,
        global = true,
        env = "SPOOL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
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
        /// Sizes as byte counts, for scripts (`cache_bytes`, and
        /// `disk_free` in bytes), instead of `8.00 MiB`.
        #[arg(long)]
        bytes: bool,
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
    /// List what the cache holds, a row per title (a playlist or manifest
    /// and everything it names; a file no playlist names): how much is
    /// cached, size, last access. Asks the running spool (admin API);
    /// with no spool answering, reads the index read-only.
    Ls {
        /// A row per media version (every segment its own) instead.
        #[arg(long)]
        media: bool,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        dir: CacheDir,
    },
    /// Pin titles: never evicted for `--max-cache-size`, only (last, and
    /// logged) when the disk falls below its critical level. A URL names
    /// the title it is or belongs to (a playlist, a segment); a cached
    /// file no playlist names becomes a title of its own.
    Pin {
        /// Upstream URLs (http or https).
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Unpin titles: they are evicted like any other again.
    Unpin {
        /// Upstream URLs (http or https).
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Warm media into a running spool's cache, with progress. A playlist
    /// or manifest is a whole title: every segment, key and
    /// initialization section of the renditions `--variant` chooses,
    /// with their audio and subtitles. Run again after an interruption:
    /// only what is still missing is fetched.
    Prefetch {
        /// Upstream URLs (http or https).
        #[arg(required = true)]
        urls: Vec<String>,
        /// Which renditions of a title: `best`, `worst`, `all`, or a
        /// bandwidth in bits per second (the best not above it).
        #[arg(long, default_value = "best", value_parser = check_variant)]
        variant: String,
        /// Start the jobs and return: they run on in the server (by
        /// default the command follows them, and Ctrl-C, SIGTERM or a
        /// closed terminal stops them).
        #[arg(long)]
        detach: bool,
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

/// A `--variant` as given, once it parses.
fn check_variant(s: &str) -> Result<String, String> {
    s.parse::<crate::manifest::Variant>().map(|_| s.to_owned())
}
