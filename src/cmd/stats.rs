//! `spool stats`: what the cache holds and how full its disk is.

use std::path::Path;

use anyhow::Context;
use indicatif::BinaryBytes;

use crate::config::FreeSpace;
use crate::disk::{self, Level};
use crate::store::Index;

/// Prints the cache's totals and its disk's level: sizes for people
/// (`8.00 MiB`), or as byte counts with `bytes`.
pub async fn stats(cache_dir: &Path, free: &FreeSpace, bytes: bool) -> anyhow::Result<()> {
    let path = cache_dir.join("index.db");
    let index = tokio::task::spawn_blocking(move || Index::open(&path))
        .await?
        .with_context(|| format!("cannot open the index in {}", cache_dir.display()))?;
    let (media, chunks, cached) = index.totals().await?;
    let space = disk::space(cache_dir)?;
    let level = Level::of(space, free.min_free_percent, free.min_free_bytes);
    println!("cache_dir      {}", cache_dir.display());
    match bytes {
        true => println!("cache_bytes    {cached}"),
        false => println!("cache_size     {}", BinaryBytes(cached)),
    }
    println!("media          {media}");
    println!("chunks         {chunks}");
    let (free_text, total_text) = match bytes {
        true => (
            space.free_bytes.to_string(),
            format!("{} bytes", space.total_bytes),
        ),
        false => (
            BinaryBytes(space.free_bytes).to_string(),
            BinaryBytes(space.total_bytes).to_string(),
        ),
    };
    println!(
        "disk_free      {free_text} of {total_text} ({:.1}%)",
        space.free_percent()
    );
    println!("disk_level     {}", level.as_str());
    Ok(())
}
