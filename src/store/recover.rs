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

use tracing::{error, warn};

use super::chunks::ChunkFiles;
use super::{unix_now, Index, IndexError, MediaId};
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
pub(crate) enum FileKind {
    Chunk(u64),
    Temp,
}

pub(crate) fn classify(name: &str) -> Option<FileKind> {
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
    /// Its place in `Report::found`.
    fn kind(&self) -> usize {
        match self {
            Problem::Temp(_) => 0,
            Problem::Orphan(_) => 1,
            Problem::Missing { .. } => 2,
            Problem::WrongLength { .. } => 3,
            Problem::Corrupt { .. } => 4,
        }
    }

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
    /// The problems found (all of them for `scan`; at most
    /// [`KEPT_PROBLEMS`] for `scan_and_repair`, which counts the rest).
    pub problems: Vec<Problem>,
    /// Every problem found, by kind: temp, orphan, missing, wrong length,
    /// corrupt.
    pub(crate) found: [u64; 5],
    /// The inode each temp file and orphan had when scanned: repair removes
    /// a file only if it still is that one.
    pub(crate) inodes: HashMap<PathBuf, u64>,
}

/// Problems a repairing scan keeps to show; the rest are only counted, so
/// its memory does not grow with a cache that lost every file.
pub const KEPT_PROBLEMS: usize = 1000;

impl Report {
    /// The problems kept that `f` accepts (tests look at them).
    #[cfg(any(test, feature = "testing"))]
    pub fn count(&self, f: impl Fn(&Problem) -> bool) -> usize {
        self.problems.iter().filter(|p| f(p)).count()
    }

    pub(crate) fn push(&mut self, p: Problem) {
        self.found[p.kind()] += 1;
        self.problems.push(p);
    }

    /// Every problem found, also those a repairing scan did not keep.
    pub fn found(&self) -> u64 {
        self.found.iter().sum()
    }

    /// Every problem found by kind: temp files, orphans, missing, wrong
    /// length, corrupt.
    pub fn found_by_kind(&self) -> [u64; 5] {
        self.found
    }

    /// Keeps only the problems `f` accepts (and counts only those).
    pub(crate) fn keep_only(&mut self, f: impl Fn(&Problem) -> bool) {
        self.problems.retain(|p| f(p));
        self.found = [0; 5];
        for p in &self.problems {
            self.found[p.kind()] += 1;
        }
    }

    /// Adds another scan's findings; keeps at most `keep` problems.
    pub(crate) fn absorb(&mut self, other: Report, keep: usize) {
        self.chunks_checked += other.chunks_checked;
        self.bytes_checked += other.bytes_checked;
        for (a, b) in self.found.iter_mut().zip(other.found) {
            *a += b;
        }
        let room = keep.saturating_sub(self.problems.len());
        for p in other.problems.into_iter().take(room) {
            if let Problem::Temp(path) | Problem::Orphan(path) = &p {
                if let Some(ino) = other.inodes.get(path) {
                    self.inodes.insert(path.clone(), *ino);
                }
            }
            self.problems.push(p);
        }
    }

    pub fn summary(&self) -> String {
        let [temp, orphan, missing, wrong, corrupt] = self.found;
        format!(
            "{} chunks ({} bytes) checked; temp files {temp}, orphans {orphan}, missing {missing}, wrong length {wrong}, corrupt {corrupt}",
            self.chunks_checked, self.bytes_checked,
        )
    }
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

    #[test]
    fn file_names() {
        assert_eq!(classify("12.chunk"), Some(FileKind::Chunk(12)));
        assert_eq!(classify(".12.00ff.tmp"), Some(FileKind::Temp));
        assert_eq!(classify("notes.txt"), None);
        assert_eq!(classify("x.chunk"), None);
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
