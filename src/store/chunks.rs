//! Chunk files on disk: `<cache-dir>/chunks/<media_id>/<chunk_index>.chunk`.
//!
//! A chunk is written under a temporary name and renamed into place, so a
//! file with the final name is always complete; only then does the caller
//! record it in the index. Write errors are classified here, once, for every
//! stage of a write.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::error::{WriteError, WriteStage};
use super::open_files::{keep_open, OpenFiles};
use super::read::BufPool;
use super::MediaId;
use crate::disk::beneath::{self, Beneath};
use crate::disk::WriteClass;

/// The chunk files under `<cache-dir>/chunks`. Cheap to clone. Its methods
/// block: async callers run them with `spawn_blocking` (or use the `_async`
/// forms).
#[derive(Debug, Clone)]
pub(crate) struct ChunkFiles {
    /// The cache directory; nothing below it is reached through a symlink.
    beneath: Beneath,
    root: PathBuf,
    fsync: bool,
    /// Buffers for reading chunk files.
    pool: Arc<BufPool>,
    /// Chunk files kept open for the next read.
    open: Arc<OpenFiles>,
    #[cfg(any(test, feature = "testing"))]
    faults: super::faults::Faults,
}

impl ChunkFiles {
    pub fn new(cache_dir: &Path, fsync: bool, read_piece: usize) -> ChunkFiles {
        ChunkFiles::with_reserved(cache_dir, fsync, read_piece, 0)
    }

    /// Chunk files that keep open what the open files limit leaves beside
    /// `reserved` descriptors (`open_files::keep_open`).
    pub fn with_reserved(
        cache_dir: &Path,
        fsync: bool,
        read_piece: usize,
        reserved: u64,
    ) -> ChunkFiles {
        ChunkFiles {
            beneath: Beneath::new(cache_dir),
            root: cache_dir.join("chunks"),
            fsync,
            pool: BufPool::new(read_piece, 64),
            open: Arc::new(OpenFiles::new(keep_open(reserved))),
            #[cfg(any(test, feature = "testing"))]
            faults: Default::default(),
        }
    }

    /// Makes coming writes fail (see `Fault`).
    #[cfg(any(test, feature = "testing"))]
    pub fn inject(&self, fault: super::faults::Fault) {
        self.faults.push(fault);
    }

    /// The injected failure for this stage, if one is armed (tests only),
    /// with the bytes to write before failing.
    #[cfg(any(test, feature = "testing"))]
    fn take_fault(&self, stage: WriteStage) -> Option<(io::Error, usize)> {
        self.faults.take(stage)
    }

    #[cfg(not(any(test, feature = "testing")))]
    fn take_fault(&self, _stage: WriteStage) -> Option<(io::Error, usize)> {
        None
    }

    /// An injected failure for a stage outside this module (the index).
    pub fn injected(&self, stage: WriteStage) -> Option<io::Error> {
        self.take_fault(stage).map(|f| f.0)
    }

    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    pub fn beneath(&self) -> &Beneath {
        &self.beneath
    }

    /// A media version's directory, opened without following symlinks.
    fn dir(&self, media_id: MediaId, create: bool) -> io::Result<OwnedFd> {
        self.beneath.dir(&["chunks", &media_id.to_string()], create)
    }

    pub fn media_dir(&self, media_id: MediaId) -> PathBuf {
        self.root.join(media_id.to_string())
    }

    #[cfg(test)]
    pub fn chunk_path(&self, media_id: MediaId, chunk_index: u64) -> PathBuf {
        self.media_dir(media_id)
            .join(format!("{chunk_index}.chunk"))
    }

    /// Writes a chunk from its pieces; returns its CRC32C. Blocking.
    pub fn write(
        &self,
        media_id: MediaId,
        chunk_index: u64,
        pieces: &[Bytes],
    ) -> Result<u32, WriteError> {
        let dir_path = self.media_dir(media_id);
        let fail = |stage, path: &Path, source: io::Error| WriteError {
            class: WriteClass::classify(&source),
            stage,
            path: path.to_owned(),
            source,
        };
        let armed = |stage| self.injected(stage).map_or(Ok(()), Err);
        let dir = armed(WriteStage::CreateDir)
            .and_then(|_| self.dir(media_id, true))
            .map_err(|e| fail(WriteStage::CreateDir, &dir_path, e))?;
        let tmp = format!(".{chunk_index}.{:016x}.tmp", rand::random::<u64>());
        let tmp_path = dir_path.join(&tmp);
        let result = (|| {
            let mut file = armed(WriteStage::Open)
                .and_then(|_| beneath::create_new(&dir, &tmp))
                .map_err(|e| fail(WriteStage::Open, &tmp_path, e))?;
            let crc = pieces
                .iter()
                .fold(0u32, |c, piece| crc32c::crc32c_append(c, piece));
            match self.take_fault(WriteStage::Write) {
                // The whole chunk in as few system calls as the kernel
                // takes (each write also updates the file's times).
                None => write_all_vectored(&mut file, pieces),
                // An injected failure in the middle of the chunk.
                Some((e, left)) => {
                    let total: usize = pieces.iter().map(|p| p.len()).sum();
                    let mut rest = left;
                    let written = pieces.iter().try_for_each(|piece| {
                        let n = rest.min(piece.len());
                        rest -= n;
                        file.write_all(&piece[..n])
                    });
                    match written {
                        Ok(()) if total > left => Err(e),
                        r => r,
                    }
                }
            }
            .map_err(|e| fail(WriteStage::Write, &tmp_path, e))?;
            armed(WriteStage::Sync)
                .and_then(|_| if self.fsync { file.sync_data() } else { Ok(()) })
                .map_err(|e| fail(WriteStage::Sync, &tmp_path, e))?;
            let dest = chunk_name(chunk_index);
            self.open.forget(media_id, chunk_index);
            armed(WriteStage::Rename)
                .and_then(|_| beneath::rename(&dir, &tmp, &dir, &dest))
                .map_err(|e| fail(WriteStage::Rename, &dir_path.join(&dest), e))?;
            // And after: a read that opened the file being replaced in
            // between must not keep it.
            self.open.forget(media_id, chunk_index);
            Ok(crc)
        })();
        if result.is_err() {
            // Never leave a partial file behind.
            let _ = beneath::remove(&dir, &tmp);
        }
        result
    }

    /// Opens a chunk file for reading, checking its length; kept open for
    /// the next read (`kept_open`). Blocking.
    pub fn open(&self, media_id: MediaId, chunk_index: u64, len: u64) -> io::Result<Arc<File>> {
        let file = beneath::open_read(&self.dir(media_id, false)?, &chunk_name(chunk_index))?;
        let actual = file.metadata()?.len();
        if actual != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk file holds {actual} bytes, index says {len}"),
            ));
        }
        let file = Arc::new(file);
        self.open.keep(media_id, chunk_index, len, &file);
        Ok(file)
    }

    /// A chunk file `open` opened before with this length, still open:
    /// no system call, so async callers use it right away.
    pub fn kept_open(&self, media_id: MediaId, chunk_index: u64, len: u64) -> Option<Arc<File>> {
        self.open.get(media_id, chunk_index, len)
    }

    /// Whether a chunk file has the recorded length and checksum. Blocking.
    pub fn verify(
        &self,
        media_id: MediaId,
        chunk_index: u64,
        len: u64,
        crc: u32,
    ) -> io::Result<bool> {
        let file = beneath::open_read(&self.dir(media_id, false)?, &chunk_name(chunk_index))?;
        check_reader(file, len, crc)
    }

    /// Moves a bad chunk file into `<cache-dir>/quarantine/` for a person
    /// to look at (or deletes it when that fails). Blocking.
    pub fn quarantine(&self, media_id: MediaId, chunk: u64) {
        self.quarantine_file(&media_id.to_string(), &chunk_name(chunk));
    }

    /// Moves `chunks/<dir>/<name>` into `<cache-dir>/quarantine/` (or
    /// deletes it when that fails). Blocking.
    pub fn quarantine_file(&self, dir: &str, name: &str) {
        self.open.forget_named(dir, name);
        let Ok(from) = self.beneath.dir(&["chunks", dir], false) else {
            return;
        };
        let stamp = super::index::unix_now();
        let dest = format!("{dir}-{}-{stamp}.chunk", name.trim_end_matches(".chunk"));
        let moved = self
            .beneath
            .dir(&["quarantine"], true)
            .and_then(|to| beneath::rename(&from, name, &to, &dest));
        if moved.is_err() {
            let _ = beneath::remove(&from, name);
        }
    }

    /// Removes `chunks/<dir>/<name>` (missing is fine). Blocking.
    pub fn remove_file(&self, dir: &str, name: &str) {
        self.open.forget_named(dir, name);
        if let Ok(d) = self.beneath.dir(&["chunks", dir], false) {
            let _ = beneath::remove(&d, name);
        }
    }

    /// Removes `chunks/<dir>/<name>` if it still is the file `ino`.
    /// Blocking.
    pub fn remove_file_if(&self, dir: &str, name: &str, ino: u64) {
        self.open.forget_named(dir, name);
        if let Ok(d) = self.beneath.dir(&["chunks", dir], false) {
            let _ = beneath::remove_if(&d, name, ino);
        }
    }

    /// Removes one chunk file (missing is fine). Blocking.
    pub fn remove(&self, media_id: MediaId, chunk_index: u64) {
        self.remove_file(&media_id.to_string(), &chunk_name(chunk_index));
    }

    /// Removes every file of a media version, off the async worker threads.
    pub async fn remove_media(&self, media_id: MediaId) {
        self.open.forget_media(media_id);
        let files = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let chunks = files.beneath.dir(&["chunks"], false)?;
            beneath::remove_dir_all(&chunks, &media_id.to_string())
        })
        .await;
    }

    /// Removes chunk files, off the async worker threads.
    pub async fn remove_many(&self, chunks: Vec<(MediaId, u64)>) {
        let files = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (media_id, index) in chunks {
                files.remove(media_id, index);
            }
        })
        .await;
    }
}

/// The file name of a chunk.
/// Writes all of `pieces`, as many at once as the kernel takes (at most
/// 1024 buffers a call, IOV_MAX).
fn write_all_vectored(file: &mut File, pieces: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let at_once = bufs.len().min(1024);
        match file.write_vectored(&bufs[..at_once]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn chunk_name(chunk_index: u64) -> String {
    format!("{chunk_index}.chunk")
}

/// Whether an open file has the given length and CRC32C. Blocking.
pub(crate) fn check_reader(mut file: File, len: u64, crc: u32) -> io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut sum = 0u32;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sum = crc32c::crc32c_append(sum, &buf[..n]);
    }
    Ok(total == len && sum == crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faults::Fault;
    use crate::store::read::{read_at, read_cached};

    #[test]
    fn write_rename_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkFiles::new(dir.path(), true, 16);
        let pieces = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let crc = store.write(MediaId(7), 3, &pieces).unwrap();
        assert_eq!(crc, crc32c::crc32c(b"hello world"));
        let file = store.open(MediaId(7), 3, 11).unwrap();
        let pool = store.pool();
        assert_eq!(&read_at(&file, 6, 5, pool).unwrap()[..], b"world");
        // Just written, so in the page cache.
        let cached = read_cached(&file, 0, 5, pool).unwrap().unwrap();
        assert_eq!(&cached[..], b"hello");
        drop(cached);
        assert_eq!(pool.idle(), 1, "buffer back in the pool");
        assert!(read_cached(&file, 8, 5, pool).is_err(), "past the end");
        assert!(store.open(MediaId(7), 3, 12).is_err(), "length is checked");
        let names: Vec<_> = std::fs::read_dir(store.media_dir(MediaId(7)))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["3.chunk"], "no temp file left");
    }

    #[test]
    fn failed_write_is_classified_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the media directory should be: create_dir fails.
        std::fs::write(dir.path().join("chunks"), b"x").unwrap();
        let store = ChunkFiles::new(dir.path(), false, 16);
        let err = store
            .write(MediaId(1), 0, &[Bytes::from_static(b"x")])
            .unwrap_err();
        assert_eq!(err.stage, WriteStage::CreateDir);
        assert_eq!(err.class, WriteClass::Io);
    }

    #[test]
    fn injected_faults_fail_each_stage_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkFiles::new(dir.path(), true, 16);
        let pieces = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        for (stage, errno, class) in [
            (WriteStage::CreateDir, 13, WriteClass::PermissionDenied),
            (WriteStage::Open, 122, WriteClass::DiskFull), // EDQUOT
            (WriteStage::Write, 28, WriteClass::DiskFull),
            (WriteStage::Sync, 5, WriteClass::Io),
            (WriteStage::Rename, 30, WriteClass::PermissionDenied),
        ] {
            store.inject(Fault {
                stage,
                errno,
                times: 1,
                after_bytes: 8, // in the middle of the second piece
            });
            let err = store.write(MediaId(1), 0, &pieces).unwrap_err();
            assert_eq!((err.stage, err.class), (stage, class));
            let left: Vec<_> = std::fs::read_dir(store.media_dir(MediaId(1)))
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{stage:?} left {left:?}");
        }
        // Faults are used up: the next write works.
        store.write(MediaId(1), 0, &pieces).unwrap();
    }
}
