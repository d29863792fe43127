//! Flag groups several subcommands share: the control plane to ask, the
//! signing key, the cache directory, the free-space thresholds.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::values::*;

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
    #[arg(long, env = "SPOOL_PUBLIC_URL", value_parser = parse_public_url)]
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
