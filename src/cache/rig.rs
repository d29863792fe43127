//! A writer on a real directory for the cache's unit tests.

use std::sync::Arc;
use std::time::Duration;

use super::catalog::Catalog;
use super::media::Media;
use super::memcache::MemCache;
use super::persist::{Parts, Writer};
use crate::disk::{Breaker, Disk, Thresholds};
use crate::metrics::Metrics;
use crate::store::MediaRow;
use crate::store::{ChunkFiles, Evictor, Index};

pub struct Rig {
    pub _dir: tempfile::TempDir,
    pub writer: Writer,
    pub index: Index,
    pub breaker: Breaker,
    pub files: ChunkFiles,
    pub metrics: Arc<Metrics>,
}

/// A writer on a real directory; free-space thresholds of zero, so the
/// disk always has room unless a fault says otherwise.
pub fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("index.db")).unwrap();
    let files = ChunkFiles::new(dir.path(), false, 1024);
    let metrics = Arc::new(Metrics::new());
    let breaker = Breaker::new(dir.path(), 5, Duration::from_secs(60), metrics.clone());
    let disk = Disk::new(
        dir.path(),
        Thresholds {
            min_free_percent: 0.0,
            min_free_bytes: 0,
            cleanup_headroom: 0,
        },
    );
    let catalog = Catalog::new(crate::cache::readahead::Policy {
        max_bytes: 40,
        time: None,
        grace: Duration::from_secs(3),
    });
    let evictor = Evictor::new(
        index.clone(),
        files.clone(),
        disk.clone(),
        metrics.clone(),
        0,
    );
    let writer = Writer::new(Parts {
        files: files.clone(),
        index: index.clone(),
        breaker: breaker.clone(),
        evictor,
        disk,
        memcache: MemCache::new(1 << 20),
        catalog,
        metrics: metrics.clone(),
    });
    Rig {
        _dir: dir,
        writer,
        index,
        breaker,
        files,
        metrics,
    }
}

pub async fn media(rig: &Rig) -> Arc<Media> {
    let row = MediaRow::for_test(0, "http://x/a", 10, 10);
    let (id, _) = rig.index.replace_media(row.clone()).await.unwrap();
    let row = MediaRow {
        media_id: Some(id),
        ..row
    };
    let url = Arc::new(url::Url::parse(&row.url).unwrap());
    Arc::new(Media::new(url, row, Vec::new()))
}
