//! Keeping the index and the chunk files in agreement: start-up
//! reconciliation, `spool verify`, chunk checksums, and recovery from an
//! index that cannot be opened.
//!
//! Nothing here touches a path outside the cache directory, and inside it
//! only names spool itself creates (`index.db*`, `chunks/<id>/<n>.chunk`,
//! `chunks/<id>/.<n>.<random>.tmp`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{error, warn};

use super::chunks::{check_reader, ChunkFiles};
use super::index::{unix_now, ChunkRow, Index, IndexError, MediaId};
use crate::disk::beneath::{self, Beneath, Kind};

/// Opens the index; one that cannot be opened (garbage, truncated, a schema
/// from a newer spool) is moved aside with a timestamp and a fresh one is
/// created. Chunk files cannot be trusted without their rows, so they are
/// cleared. Returns the reason when that happened.
pub(crate) fn open_index(cache_dir: &Path) -> Result<(Index, Option<String>), IndexError> {
    let path = cache_dir.join("index.db");
    let err = match Index::open(&path) {
        Ok(index) => return Ok((index, None)),
        Err(e) => e,
    };
    let reason = err.to_string();
    let stamp = unix_now();
    error!(error = %reason, "index unusable; moving it aside and starting a fresh one");
    for suffix in ["", "-wal", "-shm"] {
        let from = cache_dir.join(format!("index.db{suffix}"));
        if from.exists() {
            let to = cache_dir.join(format!("index.db{suffix}.broken-{stamp}"));
            if let Err(e) = fs::rename(&from, &to) {
                warn!(error = %e, path = %from.display(), "cannot move aside");
            }
        }
    }
    clear_chunks(cache_dir);
    Ok((Index::open(&path)?, Some(reason)))
}

/// Removes every chunk file spool made (and nothing else; no symlink is
/// followed).
fn clear_chunks(cache_dir: &Path) {
    let cache = Beneath::new(cache_dir);
    let Ok(chunks) = cache.dir(&["chunks"], false) else {
        return;
    };
    for dir in beneath::list(&chunks).unwrap_or_default() {
        if dir.kind != Kind::Dir || dir.name.parse::<i64>().is_err() {
            continue;
        }
        let Ok(fd) = cache.dir(&["chunks", &dir.name], false) else {
            continue;
        };
        for f in beneath::list(&fd).unwrap_or_default() {
            if f.kind == Kind::File && classify(&f.name).is_some() {
                let _ = beneath::remove(&fd, &f.name);
            }
        }
        drop(fd);
        let _ = rustix::fs::unlinkat(&chunks, dir.name.as_str(), rustix::fs::AtFlags::REMOVEDIR);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Chunk(u64),
    Temp,
}

fn classify(name: &str) -> Option<FileKind> {
    if let Some(n) = name.strip_suffix(".chunk") {
        return n.parse().ok().map(FileKind::Chunk);
    }
    (name.starts_with('.') && name.ends_with(".tmp")).then_some(FileKind::Temp)
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A temporary file left by an interrupted write.
    Temp(PathBuf),
    /// A chunk file without an index row.
    Orphan(PathBuf),
    /// An index row without its file. `write_id` names the row checked.
    Missing {
        media_id: MediaId,
        chunk: u64,
        write_id: i64,
    },
    /// A chunk file whose length is not the recorded one.
    WrongLength {
        media_id: MediaId,
        chunk: u64,
        write_id: i64,
        path: PathBuf,
    },
    /// A chunk file whose checksum is not the recorded one.
    Corrupt {
        media_id: MediaId,
        chunk: u64,
        write_id: i64,
        path: PathBuf,
    },
}

impl Problem {
    /// The chunk row a problem is about, if it is about one:
    /// (media, chunk, write).
    pub fn row(&self) -> Option<(MediaId, u64, i64)> {
        match *self {
            Problem::Temp(_) | Problem::Orphan(_) => None,
            Problem::Missing {
                media_id,
                chunk,
                write_id,
            }
            | Problem::WrongLength {
                media_id,
                chunk,
                write_id,
                ..
            }
            | Problem::Corrupt {
                media_id,
                chunk,
                write_id,
                ..
            } => Some((media_id, chunk, write_id)),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
    /// The inode each temp file and orphan had when scanned: repair removes
    /// a file only if it still is that one.
    pub(crate) inodes: HashMap<PathBuf, u64>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Problem) -> bool) -> usize {
        self.problems.iter().filter(|p| f(p)).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} chunks ({} bytes) checked; temp files {}, orphans {}, missing {}, wrong length {}, corrupt {}",
            self.chunks_checked,
            self.bytes_checked,
            self.count(|p| matches!(p, Problem::Temp(_))),
            self.count(|p| matches!(p, Problem::Orphan(_))),
            self.count(|p| matches!(p, Problem::Missing { .. })),
            self.count(|p| matches!(p, Problem::WrongLength { .. })),
            self.count(|p| matches!(p, Problem::Corrupt { .. })),
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Read every chunk and compare its checksum (not just its length).
    pub checksums: bool,
    /// Leave alone files modified at or after this time and rows created
    /// at or after it: they belong to the running process.
    pub since: Option<SystemTime>,
}

/// Compares the chunk files with the index rows. Only real files in real
/// directories are looked at: a symlink in the cache is never followed.
pub(crate) async fn scan(
    files: &ChunkFiles,
    index: &Index,
    opts: ScanOptions,
) -> Result<Report, IndexError> {
    let rows = index.all_chunks().await?;
    let files = files.clone();
    tokio::task::spawn_blocking(move || scan_files(&files, rows, opts))
        .await
        .map_err(|_| IndexError::Closed)
}

fn scan_files(
    files: &ChunkFiles,
    rows: Vec<(MediaId, ChunkRow, i64)>,
    opts: ScanOptions,
) -> Report {
    let since_unix = opts.since.map(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let mut rows: HashMap<(MediaId, u64), (ChunkRow, i64)> = rows
        .into_iter()
        .map(|(m, c, created)| ((m, c.chunk_index), (c, created)))
        .collect();
    let mut report = Report::default();
    let cache = files.beneath();
    let dirs = cache
        .dir(&["chunks"], false)
        .and_then(|d| beneath::list(&d))
        .unwrap_or_default();
    for dir in dirs {
        let Some(media_id) = dir.name.parse::<i64>().ok().map(MediaId) else {
            continue;
        };
        if dir.kind != Kind::Dir {
            continue;
        }
        let Ok(fd) = cache.dir(&["chunks", &dir.name], false) else {
            continue;
        };
        for f in beneath::list(&fd).unwrap_or_default() {
            let path = files.media_dir(media_id).join(&f.name);
            let Some(kind) = classify(&f.name) else {
                continue;
            };
            if f.kind != Kind::File {
                continue;
            }
            let recent = opts.since.is_some_and(|s| f.modified >= s);
            match kind {
                FileKind::Temp if !recent => {
                    report.inodes.insert(path.clone(), f.ino);
                    report.problems.push(Problem::Temp(path));
                }
                FileKind::Temp => {}
                FileKind::Chunk(chunk) => {
                    let Some((row, _)) = rows.remove(&(media_id, chunk)) else {
                        if !recent {
                            report.inodes.insert(path.clone(), f.ino);
                            report.problems.push(Problem::Orphan(path));
                        }
                        continue;
                    };
                    if recent {
                        continue;
                    }
                    report.chunks_checked += 1;
                    if f.len != row.size_bytes {
                        report.problems.push(Problem::WrongLength {
                            media_id,
                            chunk,
                            write_id: row.write_id,
                            path,
                        });
                        continue;
                    }
                    if opts.checksums {
                        report.bytes_checked += f.len;
                        let good = beneath::open_read(&fd, &f.name)
                            .and_then(|file| check_reader(file, row.size_bytes, row.crc32c));
                        // Only bytes found wrong make a chunk corrupt; a file
                        // that cannot be read now (out of descriptors,
                        // vanished meanwhile) is looked at next time.
                        if matches!(good, Ok(false)) {
                            report.problems.push(Problem::Corrupt {
                                media_id,
                                chunk,
                                write_id: row.write_id,
                                path,
                            });
                        }
                    }
                }
            }
        }
    }
    for ((media_id, chunk), (row, created)) in rows {
        if since_unix.is_none_or(|s| created < s) {
            report.problems.push(Problem::Missing {
                media_id,
                chunk,
                write_id: row.write_id,
            });
        }
    }
    report
}

/// Fixes what a scan found: temp files and orphans removed, rows of
/// missing files removed, bad chunks quarantined and their rows removed.
/// Only the row a scan checked is acted on: a chunk evicted and cached
/// again since (a new write) keeps its row and file. The file work runs
/// off the async worker threads.
pub(crate) async fn repair(
    files: &ChunkFiles,
    index: &Index,
    report: &Report,
) -> Result<(), IndexError> {
    let mut file_work = Vec::new();
    for p in &report.problems {
        match p {
            Problem::Temp(path) | Problem::Orphan(path) => {
                let ino = report.inodes.get(path).copied();
                file_work.push((path.clone(), Work::Remove(ino)));
            }
            Problem::Missing { .. } | Problem::WrongLength { .. } | Problem::Corrupt { .. } => {
                let (media_id, chunk, write_id) = p.row().expect("a row problem");
                // The row first: if it is no longer the write that was
                // checked, the file at its path is not the one checked
                // either.
                if !index.remove_chunk_write(media_id, chunk, write_id).await? {
                    continue;
                }
                if let Problem::WrongLength { path, .. } | Problem::Corrupt { path, .. } = p {
                    file_work.push((path.clone(), Work::Quarantine));
                }
            }
        }
    }
    let files = files.clone();
    tokio::task::spawn_blocking(move || {
        for (path, work) in file_work {
            // Scan paths are `<cache>/chunks/<dir>/<name>`; they are reached
            // again through the cache directory, never followed.
            let name = path.file_name().and_then(|n| n.to_str());
            let dir = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str());
            let (Some(dir), Some(name)) = (dir, name) else {
                continue;
            };
            match work {
                Work::Quarantine => files.quarantine_file(dir, name),
                // A chunk fetched again since the scan has a new file in
                // the orphan's place: only the scanned file goes.
                Work::Remove(Some(ino)) => files.remove_file_if(dir, name, ino),
                Work::Remove(None) => {}
            }
        }
    })
    .await
    .map_err(|_| IndexError::Closed)
}

enum Work {
    Quarantine,
    /// Remove the file if it still has this inode.
    Remove(Option<u64>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunks::ChunkFiles;
    use bytes::Bytes;

    #[test]
    fn file_names() {
        assert_eq!(classify("12.chunk"), Some(FileKind::Chunk(12)));
        assert_eq!(classify(".12.00ff.tmp"), Some(FileKind::Temp));
        assert_eq!(classify("notes.txt"), None);
        assert_eq!(classify("x.chunk"), None);
    }

    fn row(chunk_index: u64, crc32c: u32) -> ChunkRow {
        ChunkRow::new(chunk_index, 10, crc32c)
    }

    /// A chunk evicted and cached again between a scan and its repair keeps
    /// its new row and file: repair acts on the row it checked, not on
    /// whatever row has the same key by then.
    #[tokio::test]
    async fn repair_leaves_a_chunk_cached_again_since_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open_index(dir.path()).unwrap();
        let files = ChunkFiles::new(dir.path(), false, 16);
        let media = crate::store::index::MediaRow::for_test(0, "http://x/", 10, 10);
        let (id, _) = index.replace_media(media).await.unwrap();
        let good = Bytes::from(vec![7u8; 10]);
        let crc = files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        index.insert_chunk(id, row(0, crc)).await.unwrap();
        // The disk flips a byte: the scan finds the chunk corrupt.
        fs::write(files.chunk_path(id, 0), [9u8; 10]).unwrap();
        let opts = ScanOptions {
            checksums: true,
            since: None,
        };
        let report = scan(&files, &index, opts).await.unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        // Meanwhile the chunk is evicted and fetched again: same bytes,
        // same checksum, a new file and a new row.
        index.remove_chunk(id, 0).await.unwrap();
        files.remove(id, 0);
        let crc = files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        index.insert_chunk(id, row(0, crc)).await.unwrap();
        repair(&files, &index, &report).await.unwrap();
        assert_eq!(index.chunks(id).await.unwrap().len(), 1, "new row kept");
        assert_eq!(
            fs::read(files.chunk_path(id, 0)).unwrap(),
            good,
            "new file kept"
        );
    }

    /// An orphan (a file without a row, left by a killed process) that a
    /// player fetches again between the scan and the repair keeps its new
    /// file: only the file the scan saw is removed.
    #[tokio::test]
    async fn repair_leaves_an_orphan_written_again_since_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open_index(dir.path()).unwrap();
        let files = ChunkFiles::new(dir.path(), false, 16);
        let media = crate::store::index::MediaRow::for_test(0, "http://x/", 10, 10);
        let (id, _) = index.replace_media(media).await.unwrap();
        let good = Bytes::from(vec![7u8; 10]);
        files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        let opts = ScanOptions {
            checksums: false,
            since: None,
        };
        let report = scan(&files, &index, opts).await.unwrap();
        assert!(
            matches!(report.problems[..], [Problem::Orphan(_)]),
            "{report:?}"
        );
        // Fetched again: a new file renamed into place, then its row.
        let crc = files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        index.insert_chunk(id, row(0, crc)).await.unwrap();
        repair(&files, &index, &report).await.unwrap();
        assert_eq!(
            fs::read(files.chunk_path(id, 0)).unwrap(),
            good,
            "new file kept"
        );
        let report = scan(&files, &index, opts).await.unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
    }

    #[tokio::test]
    async fn scan_finds_and_repair_fixes() {
        let dir = tempfile::tempdir().unwrap();
        let (index, reason) = open_index(dir.path()).unwrap();
        assert!(reason.is_none());
        let files = ChunkFiles::new(dir.path(), false, 16);
        let store = &files;
        let (id, _) = index
            .replace_media(crate::store::index::MediaRow::for_test(
                0,
                "http://x/",
                40,
                10,
            ))
            .await
            .unwrap();
        for i in 0..4u64 {
            let piece = Bytes::from(vec![i as u8; 10]);
            let crc = store.write(id, i, &[piece]).unwrap();
            index.insert_chunk(id, row(i, crc)).await.unwrap();
        }
        let opts = ScanOptions {
            checksums: true,
            since: None,
        };
        assert!(scan(&files, &index, opts)
            .await
            .unwrap()
            .problems
            .is_empty());

        // Damage: a flipped byte, a truncated chunk, a deleted chunk, an
        // orphan, a temp file, and a file that is not spool's.
        fs::write(store.chunk_path(id, 0), [9u8; 10]).unwrap();
        fs::write(store.chunk_path(id, 1), [1u8; 5]).unwrap();
        fs::remove_file(store.chunk_path(id, 2)).unwrap();
        fs::write(store.chunk_path(id, 7), [0u8; 10]).unwrap();
        fs::write(store.media_dir(id).join(".3.abc.tmp"), b"x").unwrap();
        fs::write(store.media_dir(id).join("README"), b"keep").unwrap();

        let report = scan(&files, &index, opts).await.unwrap();
        assert_eq!(report.problems.len(), 5, "{report:?}");
        assert!(report.summary().contains("corrupt 1"));
        repair(&files, &index, &report).await.unwrap();
        assert!(scan(&files, &index, opts)
            .await
            .unwrap()
            .problems
            .is_empty());
        assert_eq!(
            index.chunks(id).await.unwrap().len(),
            1,
            "only chunk 3 is left"
        );
        assert!(store.media_dir(id).join("README").exists());
        assert_eq!(
            fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
            2
        );
    }

    #[test]
    fn garbage_index_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("index.db"), vec![0x42u8; 8192]).unwrap();
        fs::create_dir_all(dir.path().join("chunks/5")).unwrap();
        fs::write(dir.path().join("chunks/5/0.chunk"), b"x").unwrap();
        fs::write(dir.path().join("keep.txt"), b"mine").unwrap();
        let (_index, reason) = open_index(dir.path()).unwrap();
        assert!(reason.is_some());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("index.db.broken-")),
            "{names:?}"
        );
        assert!(dir.path().join("keep.txt").exists());
        assert!(!dir.path().join("chunks/5/0.chunk").exists());
    }
}
