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
}

#[derive(Debug, thiserror::Error)]
#[error("{class} while {stage:?} {path}: {source}")]
pub struct WriteError {
    pub class: WriteClass,
    pub stage: WriteStage,
    pub path: PathBuf,
    pub source: io::Error,
}

/// The chunk files under `<cache-dir>/chunks`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    fsync: bool,
}

impl Store {
    pub fn new(cache_dir: &Path, fsync: bool) -> Store {
        Store {
            root: cache_dir.join("chunks"),
            fsync,
        }
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
        fs::create_dir_all(&dir).map_err(|e| fail(WriteStage::CreateDir, &dir, e))?;
        let tmp = dir.join(format!(".{chunk_index}.{:016x}.tmp", rand::random::<u64>()));
        let result = (|| {
            let mut file = File::create_new(&tmp).map_err(|e| fail(WriteStage::Open, &tmp, e))?;
            let mut crc = 0u32;
            for piece in pieces {
                file.write_all(piece)
                    .map_err(|e| fail(WriteStage::Write, &tmp, e))?;
                crc = crc32c::crc32c_append(crc, piece);
            }
            if self.fsync {
                file.sync_data()
                    .map_err(|e| fail(WriteStage::Sync, &tmp, e))?;
            }
            let dest = self.chunk_path(media_id, chunk_index);
            fs::rename(&tmp, &dest).map_err(|e| fail(WriteStage::Rename, &dest, e))?;
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
        crate::recover::check_file(&self.chunk_path(media_id, chunk_index), len, crc)
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

/// Reads exactly `len` bytes at `offset`. Blocking.
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
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
        assert_eq!(&read_at(&file, 6, 5).unwrap()[..], b"world");
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
