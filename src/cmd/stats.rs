//! `spool stats`: what the cache holds and how full its disk is.

use std::path::Path;

use anyhow::Context;

use crate::config::FreeSpace;
use crate::disk::{self, Level};
use crate::store::Index;

/// Prints the cache's totals and its disk's level.
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
