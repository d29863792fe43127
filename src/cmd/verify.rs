//! `spool verify`: every chunk checked against its checksum, and the
//! index repaired on request.

use std::path::Path;

use crate::store::recover;
use crate::store::walk::{self, ScanOptions};
use crate::store::{ChunkFiles, Index};

/// Checks every chunk; returns whether the cache was clean.
pub async fn verify(cache_dir: &Path, repair: bool) -> anyhow::Result<bool> {
    let path = cache_dir.join("index.db");
    anyhow::ensure!(path.exists(), "no index at {}", path.display());
    // Repairs remove temp files and chunks not indexed yet: on a cache a
    // server is using, those are its writes under way. Only with the
    // cache directory held (reading needs no lock).
    let _held = match repair {
        false => None,
        true => {
            let dir = cache_dir.to_owned();
            let lock =
                tokio::task::spawn_blocking(move || crate::disk::CacheLock::acquire(&dir)).await?;
            match lock {
                Ok(l) => Some(l),
                Err(e @ crate::disk::LockError::Held(_)) => anyhow::bail!(
                    "{e}. `spool verify --repair` changes the cache: stop the server first, or \
                     run `spool verify` without --repair to only look"
                ),
                Err(e) => return Err(e.into()),
            }
        }
    };
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
        rate: None,
    };
    // A media at a time (fixed as it goes with --repair): memory does not
    // grow with the size of the cache.
    let report = match repair {
        true => walk::scan_and_repair(&files, &index, opts, |_| true).await?,
        false => walk::scan(&files, &index, opts).await?,
    };
    for p in &report.problems {
        println!("{p:?}");
    }
    let shown = report.problems.len() as u64;
    if report.found() > shown {
        println!("... and {} more", report.found() - shown);
    }
    println!("{}", report.summary());
    if repair && report.found() > 0 {
        println!("repaired {} problems", report.found());
    }
    Ok(report.found() == 0)
}
