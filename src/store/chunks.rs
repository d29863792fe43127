//! Chunk files on disk.
//!
//! A chunk is written under a temporary name and renamed into place, so a
//! file with the final name is always complete; only then does the caller
//! record it in the index. Write errors are classified here, once, for every
//! stage of a write, so logs and metrics speak of the same three classes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// What kind of failure a cache write met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteClass {
    /// ENOSPC, EDQUOT.
    DiskFull,
    /// EACCES, EPERM, EROFS.
    PermissionDenied,
    /// Everything else.
    Io,
}

impl WriteClass {
    pub fn classify(e: &io::Error) -> WriteClass {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => WriteClass::DiskFull,
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                WriteClass::PermissionDenied
            }
            _ => WriteClass::Io,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WriteClass::DiskFull => "DISK_FULL",
            WriteClass::PermissionDenied => "PERMISSION_DENIED",
            WriteClass::Io => "IO",
        }
    }
}

impl std::fmt::Display for WriteClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage of a write that failed, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStage {
    CreateDir,
    Open,
    Write,
    Sync,
    Rename,
    /// Recording the chunk in the index (after the rename).
    Index,
}

/// A write failure injected on purpose, for what a real filesystem cannot
/// produce on demand (EDQUOT, a failing rename or fsync, a failure in the
/// middle of a chunk). Tests reach it through `Store::inject`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub stage: WriteStage,
    /// The errno the stage fails with.
    pub errno: i32,
    /// How many writes fail (then the fault is gone).
    pub times: u32,
    /// For `Write`: bytes written before the failure.
    pub after_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{class} while {stage:?} {path}: {source}")]
pub struct WriteError {
    pub class: WriteClass,
    pub stage: WriteStage,
    pub path: PathBuf,
    pub source: io::Error,
}

impl WriteError {
    /// A write that could not even run (its task died).
    pub fn other(e: impl std::fmt::Display) -> WriteError {
        WriteError {
            class: WriteClass::Io,
            stage: WriteStage::Write,
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        }
    }
}

/// The chunk files under `<cache-dir>/chunks`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    fsync: bool,
    faults: Arc<std::sync::Mutex<Vec<Fault>>>,
}

impl Store {
    pub fn new(cache_dir: &Path, fsync: bool) -> Store {
        Store {
            root: cache_dir.join("chunks"),
            fsync,
            faults: Arc::default(),
        }
    }

    /// Makes coming writes fail (see `Fault`).
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    /// The injected failure for this stage, if one is armed; with the bytes
    /// to write before failing.
    fn take_fault(&self, stage: WriteStage) -> Option<(io::Error, usize)> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults
            .iter()
            .position(|f| f.stage == stage && f.times > 0)?;
        faults[i].times -= 1;
        let f = faults[i].clone();
        faults.retain(|f| f.times > 0);
        Some((io::Error::from_raw_os_error(f.errno), f.after_bytes))
    }

    pub fn injected(&self, stage: WriteStage) -> Option<io::Error> {
        self.take_fault(stage).map(|f| f.0)
    }

    pub fn media_dir(&self, media_id: i64) -> PathBuf {
        self.root.join(media_id.to_string())
    }

    pub fn chunk_path(&self, media_id: i64, chunk_index: u64) -> PathBuf {
        self.media_dir(media_id)
            .join(format!("{chunk_index}.chunk"))
    }

    /// Writes a chunk from its pieces; returns its CRC32C. Blocking.
    pub fn write(
        &self,
        media_id: i64,
        chunk_index: u64,
        pieces: &[Bytes],
    ) -> Result<u32, WriteError> {
        let dir = self.media_dir(media_id);
        let fail = |stage, path: &Path, source: io::Error| WriteError {
            class: WriteClass::classify(&source),
            stage,
            path: path.to_owned(),
            source,
        };
        let armed = |stage| self.injected(stage).map_or(Ok(()), Err);
        armed(WriteStage::CreateDir)
            .and_then(|_| fs::create_dir_all(&dir))
            .map_err(|e| fail(WriteStage::CreateDir, &dir, e))?;
        let tmp = dir.join(format!(".{chunk_index}.{:016x}.tmp", rand::random::<u64>()));
        let result = (|| {
            let mut file = armed(WriteStage::Open)
                .and_then(|_| File::create_new(&tmp))
                .map_err(|e| fail(WriteStage::Open, &tmp, e))?;
            let mut crc = 0u32;
            let mut budget = self.take_fault(WriteStage::Write);
            for piece in pieces {
                if let Some((_, left)) = &mut budget {
                    // An injected failure in the middle of the chunk.
                    let n = (*left).min(piece.len());
                    file.write_all(&piece[..n])
                        .map_err(|e| fail(WriteStage::Write, &tmp, e))?;
                    *left -= n;
                    if n < piece.len() {
                        let (e, _) = budget.take().expect("armed");
                        return Err(fail(WriteStage::Write, &tmp, e));
                    }
                } else {
                    file.write_all(piece)
                        .map_err(|e| fail(WriteStage::Write, &tmp, e))?;
                }
                crc = crc32c::crc32c_append(crc, piece);
            }
            armed(WriteStage::Sync)
                .and_then(|_| if self.fsync { file.sync_data() } else { Ok(()) })
                .map_err(|e| fail(WriteStage::Sync, &tmp, e))?;
            let dest = self.chunk_path(media_id, chunk_index);
            armed(WriteStage::Rename)
                .and_then(|_| fs::rename(&tmp, &dest))
                .map_err(|e| fail(WriteStage::Rename, &dest, e))?;
            Ok(crc)
        })();
        if result.is_err() {
            // Never leave a partial file behind.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Opens a chunk file for reading, checking its length.
    pub fn open(&self, media_id: i64, chunk_index: u64, len: u64) -> io::Result<Arc<File>> {
        let file = File::open(self.chunk_path(media_id, chunk_index))?;
        let actual = file.metadata()?.len();
        if actual != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk file holds {actual} bytes, index says {len}"),
            ));
        }
        Ok(Arc::new(file))
    }

    /// Whether a chunk file has the recorded length and checksum. Blocking.
    pub fn verify(&self, media_id: i64, chunk_index: u64, len: u64, crc: u32) -> io::Result<bool> {
        crate::store::recover::check_file(&self.chunk_path(media_id, chunk_index), len, crc)
    }

    /// Removes one chunk file (missing is fine).
    pub fn remove(&self, media_id: i64, chunk_index: u64) {
        let _ = fs::remove_file(self.chunk_path(media_id, chunk_index));
    }

    /// Removes every file of a media version.
    pub fn remove_media(&self, media_id: i64) {
        let _ = fs::remove_dir_all(self.media_dir(media_id));
    }
}

/// Buffers for reads from chunk files, reused so that serving from the
/// cache does not allocate (and fault in) fresh memory for every piece.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    keep: usize,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// Buffers of `size` bytes; at most `keep` idle ones are kept.
    pub fn new(size: usize, keep: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            size,
            keep,
            free: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| vec![0; self.size])
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A pooled buffer holding `len` valid bytes; returns to the pool when the
/// last `Bytes` pointing into it is dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Reads exactly `len` (at most the pool's buffer size) bytes at `offset`,
/// only if they are all in the page cache: never blocks on the disk.
/// `Ok(None)` means the caller should read with `read_at` on a blocking
/// thread instead.
pub fn read_cached(
    file: &File,
    offset: u64,
    len: usize,
    pool: &Arc<BufPool>,
) -> io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    let mut buf = pool.take();
    debug_assert!(len <= buf.len());
    let mut done = 0;
    while done < len {
        let iov = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: len - done,
        };
        // SAFETY: the iovec points into `buf`, which outlives the call.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n > 0 {
            done += n as usize;
            continue;
        }
        pool.give(buf);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk file is short",
            ));
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // Not in the page cache, or RWF_NOWAIT unsupported here.
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(None),
            Some(libc::EINTR) => read_cached(file, offset, len, pool),
            _ => Err(e),
        };
    }
    Ok(Some(Bytes::from_owner(Pooled {
        buf,
        len,
        pool: pool.clone(),
    })))
}

/// Reads exactly `len` bytes at `offset`. Blocking.
pub fn read_at(file: &File, offset: u64, len: usize, pool: &Arc<BufPool>) -> io::Result<Bytes> {
    let mut buf = pool.take();
    if let Err(e) = file.read_exact_at(&mut buf[..len], offset) {
        pool.give(buf);
        return Err(e);
    }
    Ok(Bytes::from_owner(Pooled {
        buf,
        len,
        pool: pool.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rename_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), true);
        let pieces = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let crc = store.write(7, 3, &pieces).unwrap();
        assert_eq!(crc, crc32c::crc32c(b"hello world"));
        let file = store.open(7, 3, 11).unwrap();
        let pool = BufPool::new(16, 1);
        assert_eq!(&read_at(&file, 6, 5, &pool).unwrap()[..], b"world");
        // Just written, so in the page cache.
        let cached = read_cached(&file, 0, 5, &pool).unwrap().unwrap();
        assert_eq!(&cached[..], b"hello");
        drop(cached);
        assert_eq!(
            pool.free.lock().unwrap().len(),
            1,
            "buffer back in the pool"
        );
        assert!(read_cached(&file, 8, 5, &pool).is_err(), "past the end");
        assert!(store.open(7, 3, 12).is_err(), "length is checked");
        let names: Vec<_> = fs::read_dir(store.media_dir(7))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["3.chunk"], "no temp file left");
    }

    #[test]
    fn failed_write_is_classified_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the media directory should be: create_dir fails.
        fs::write(dir.path().join("chunks"), b"x").unwrap();
        let store = Store::new(dir.path(), false);
        let err = store.write(1, 0, &[Bytes::from_static(b"x")]).unwrap_err();
        assert_eq!(err.stage, WriteStage::CreateDir);
        assert_eq!(err.class, WriteClass::Io);
    }

    #[test]
    fn injected_faults_fail_each_stage_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), true);
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
            let err = store.write(1, 0, &pieces).unwrap_err();
            assert_eq!((err.stage, err.class), (stage, class));
            let left: Vec<_> = fs::read_dir(store.media_dir(1))
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{stage:?} left {left:?}");
        }
        // Faults are used up: the next write works.
        store.write(1, 0, &pieces).unwrap();
    }

    #[test]
    fn classes() {
        let of = |kind| WriteClass::classify(&io::Error::from(kind));
        assert_eq!(of(io::ErrorKind::StorageFull), WriteClass::DiskFull);
        assert_eq!(of(io::ErrorKind::QuotaExceeded), WriteClass::DiskFull);
        assert_eq!(
            of(io::ErrorKind::PermissionDenied),
            WriteClass::PermissionDenied
        );
        assert_eq!(
            of(io::ErrorKind::ReadOnlyFilesystem),
            WriteClass::PermissionDenied
        );
        assert_eq!(of(io::ErrorKind::Other), WriteClass::Io);
        let raw = |n| WriteClass::classify(&io::Error::from_raw_os_error(n));
        assert_eq!(raw(28), WriteClass::DiskFull); // ENOSPC
        assert_eq!(raw(122), WriteClass::DiskFull); // EDQUOT
        assert_eq!(raw(13), WriteClass::PermissionDenied); // EACCES
        assert_eq!(raw(1), WriteClass::PermissionDenied); // EPERM
        assert_eq!(raw(30), WriteClass::PermissionDenied); // EROFS
        assert_eq!(raw(5), WriteClass::Io); // EIO
    }
}
