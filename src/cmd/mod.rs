//! `spool verify`, `spool stats`, `spool healthcheck`, `spool ls` and
//! `spool prefetch`: looking at a cache or a running spool from the shell.

mod healthcheck;
mod ls;
mod prefetch;
mod remote;

pub use healthcheck::healthcheck;
pub use ls::ls;
pub use prefetch::prefetch;

use std::path::Path;

use anyhow::Context;

use crate::config::FreeSpace;
use crate::disk::{self, Level};
use crate::store::recover::{self, ScanOptions};
use crate::store::{ChunkFiles, Index};

/// Checks every chunk; returns whether the cache was clean.
pub async fn verify(cache_dir: &Path, repair: bool) -> anyhow::Result<bool> {
    let path = cache_dir.join("index.db");
    anyhow::ensure!(path.exists(), "no index at {}", path.display());
    let opened = tokio::task::spawn_blocking({
        let path = path.clone();
        move || Index::open(&path)
    })
    .await?;
    let index = match opened {
        Ok(i) => i,
        Err(e) if repair => {
            println!("index unusable ({e}); moving it aside");
            let dir = cache_dir.to_owned();
            let (index, _) =
                tokio::task::spawn_blocking(move || recover::open_index(&dir)).await??;
            println!("fresh index created; chunk files cleared");
            drop(index);
            return Ok(false);
        }
        Err(e) => {
            println!("index unusable: {e}");
            return Ok(false);
        }
    };
    let files = ChunkFiles::new(cache_dir, false, 1 << 20);
    let opts = ScanOptions {
        checksums: true,
        since: None,
    };
    let report = recover::scan(&files, &index, opts).await?;
    for p in &report.problems {
        println!("{p:?}");
    }
    println!("{}", report.summary());
    if repair && !report.problems.is_empty() {
        recover::repair(&files, &index, &report).await?;
        println!("repaired {} problems", report.problems.len());
    }
    Ok(report.problems.is_empty())
}

pub async fn stats(cache_dir: &Path, free: &FreeSpace) -> anyhow::Result<()> {
    let path = cache_dir.join("index.db");
    let index = tokio::task::spawn_blocking(move || Index::open(&path))
        .await?
        .with_context(|| format!("cannot open the index in {}", cache_dir.display()))?;
    let (media, chunks, bytes) = index.totals().await?;
    let space = disk::space(cache_dir)?;
    let level = Level::of(space, free.min_free_percent, free.min_free_bytes);
    println!("cache_dir      {}", cache_dir.display());
    println!("cache_bytes    {bytes}");
    println!("media          {media}");
    println!("chunks         {chunks}");
    println!(
        "disk_free      {} of {} bytes ({:.1}%)",
        space.free_bytes,
        space.total_bytes,
        space.free_percent()
    );
    println!("disk_level     {}", level.as_str());
    Ok(())
}

/// A signed, playable link for `url`: for the URL's directory when
/// `scope` says so or, without a scope, when it names a playlist or
/// manifest.
pub fn sign(
    url: &str,
    scope: Option<crate::signing::Scope>,
    expires: crate::signing::Expiry,
    signing: &crate::config::Signing,
    listen: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let url = crate::upstream::parse_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = signing.key()?.context(
        "no key: set SPOOL_SECRET, or SPOOL_SECRET_FILE to the key file the server uses",
    )?;
    let scope = scope.unwrap_or(if crate::signing::is_playlist_name(&url) {
        crate::signing::Scope::Dir
    } else {
        crate::signing::Scope::File
    });
    crate::signing::link_scoped(&signing.public_url(listen), &key, &url, expires, scope)
        .context("--expires is too far away")
}
