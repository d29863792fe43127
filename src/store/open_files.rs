//! Chunk files kept open for the next read: a warm request (a seek, a
//! range) reads a chunk it read before without opening it again, right
//! on the async thread, instead of a trip to a blocking thread for an
//! `openat` and an `fstat`.
//!
//! Chunk files never change once renamed into place; every way spool
//! replaces or removes one (`ChunkFiles`) forgets it here first, so a
//! descriptor kept here never holds a file spool let go of (and its disk
//! space). The map is bounded; the least recently read go first.

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use super::MediaId;

/// How many chunk files stay open at least and at most.
const MIN_KEEP_OPEN: u64 = 256;
const MAX_KEEP_OPEN: u64 = 4096;

/// How many chunk files stay open: a quarter of what the open files
/// limit (which spool raises to the hard limit at start) leaves beside
/// `reserved` descriptors (connections', downloads'), from 256 to 4096
/// (4 GiB of 1 MiB chunks). Random ranges over a file larger than what
/// stays open pay an open on a blocking thread per range.
pub(crate) fn keep_open(reserved: u64) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (limit.saturating_sub(reserved) / 4).clamp(MIN_KEEP_OPEN, MAX_KEEP_OPEN) as usize
}

/// A chunk (media version, index) and its open file with its length.
type Kept = lru::LruCache<(MediaId, u64), (Arc<File>, u64)>;

#[derive(Debug)]
pub(crate) struct OpenFiles {
    files: Mutex<Kept>,
}

impl OpenFiles {
    pub fn new(keep: usize) -> OpenFiles {
        OpenFiles {
            files: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(keep).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The open chunk file, if it is kept and has the length `len` the
    /// index gives it.
    pub fn get(&self, media_id: MediaId, index: u64, len: u64) -> Option<Arc<File>> {
        let mut files = self.files.lock().unwrap();
        match files.get(&(media_id, index)) {
            Some((f, l)) if *l == len => Some(f.clone()),
            _ => None,
        }
    }

    pub fn keep(&self, media_id: MediaId, index: u64, len: u64, file: &Arc<File>) {
        self.files
            .lock()
            .unwrap()
            .put((media_id, index), (file.clone(), len));
    }

    pub fn forget(&self, media_id: MediaId, index: u64) {
        self.files.lock().unwrap().pop(&(media_id, index));
    }

    /// Forgets every chunk of a media version.
    pub fn forget_media(&self, media_id: MediaId) {
        let mut files = self.files.lock().unwrap();
        let gone: Vec<_> = files
            .iter()
            .filter(|((m, _), _)| *m == media_id)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            files.pop(&k);
        }
    }

    /// Forgets `chunks/<dir>/<name>` given by its names (recovery's
    /// work); names that are not a media's chunk are none of this map's.
    pub fn forget_named(&self, dir: &str, name: &str) {
        let media = dir.parse::<i64>().ok().map(MediaId);
        let index = name
            .strip_suffix(".chunk")
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(m), Some(i)) = (media, index) {
            self.forget(m, i);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn kept_by_length_bounded_and_forgotten() {
        let open = OpenFiles::new(2);
        let (a, b) = (MediaId(1), MediaId(2));
        open.keep(a, 0, 10, &file());
        assert!(open.get(a, 0, 10).is_some());
        // The index says another length: not this file.
        assert!(open.get(a, 0, 11).is_none());
        open.keep(a, 1, 10, &file());
        open.keep(b, 0, 10, &file());
        // Bounded: the least recently used went.
        assert_eq!(open.len(), 2);
        assert!(open.get(a, 0, 10).is_none());
        open.forget_named("2", "0.chunk");
        assert!(open.get(b, 0, 10).is_none());
        open.forget_named("2", ".0.0123.tmp");
        open.keep(b, 3, 10, &file());
        open.forget_media(a);
        assert!(open.get(a, 1, 10).is_none());
        assert!(open.get(b, 3, 10).is_some());
        open.forget(b, 3);
        assert_eq!(open.len(), 0);
    }
}
