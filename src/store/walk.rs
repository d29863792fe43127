//! Walking the cache to compare chunk files with index rows: start-up
//! reconciliation, the background check and `spool verify`. One media at
//! a time, the index read in batches, so memory grows with the largest
//! media's chunks and the problems kept, never with the cache; the reads
//! for checksums paced by `--scrub-rate`. What a walk finds is fixed by
//! `recover::repair`.

use std::collections::HashMap;
use std::time::SystemTime;

use super::chunks::{check_reader, ChunkFiles};
use super::recover::{classify, repair, FileKind, Problem, Report, KEPT_PROBLEMS};
use super::{ChunkRow, Index, IndexError, MediaId};
use crate::disk::beneath::{self, Kind};

#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Read every chunk and compare its checksum (not just its length).
    pub checksums: bool,
    /// Leave alone files modified at or after this time and rows created
    /// at or after it: they belong to the running process.
    pub since: Option<SystemTime>,
    /// Most bytes a second read for checksums (None: as fast as the disk
    /// goes), so a background check never competes with players.
    pub rate: Option<u64>,
}

/// Media whose rows a scan reads from the index at a time.
const MEDIA_BATCH: u32 = 256;

/// Compares the chunk files with the index rows. Only real files in real
/// directories are looked at: a symlink in the cache is never followed.
/// One media at a time: memory grows with the largest media's chunks and
/// the problems found, never with the whole index.
pub(crate) async fn scan(
    files: &ChunkFiles,
    index: &Index,
    opts: ScanOptions,
) -> Result<Report, IndexError> {
    let mut all = Report::default();
    let mut walk = Walk::new(files, index, opts).await;
    while let Some(report) = walk.next().await? {
        all.absorb(report, usize::MAX);
    }
    Ok(all)
}

/// [`scan`], fixing each media's problems as they are found (those `fix`
/// accepts; see [`repair`]). Keeps at most [`KEPT_PROBLEMS`] of them to
/// show, and counts all.
pub(crate) async fn scan_and_repair(
    files: &ChunkFiles,
    index: &Index,
    opts: ScanOptions,
    fix: impl Fn(&Problem) -> bool,
) -> Result<Report, IndexError> {
    let mut all = Report::default();
    let mut walk = Walk::new(files, index, opts).await;
    while let Some(mut report) = walk.next().await? {
        report.keep_only(&fix);
        repair(files, index, &report).await?;
        all.absorb(report, KEPT_PROBLEMS);
    }
    Ok(all)
}

/// The media of a scan, in order of their ids: those with a directory
/// under `chunks/` merged with those the index has rows for.
pub(crate) struct Walk {
    files: ChunkFiles,
    index: Index,
    opts: ScanOptions,
    /// Media directories found, ascending ids, and the next to look at.
    dirs: Vec<i64>,
    next_dir: usize,
    /// Media with rows, a batch at a time.
    rows_batch: std::collections::VecDeque<i64>,
    rows_after: i64,
    rows_done: bool,
    throttle: Throttle,
}

impl Walk {
    pub async fn new(files: &ChunkFiles, index: &Index, opts: ScanOptions) -> Walk {
        let lister = files.clone();
        let listed = tokio::task::spawn_blocking(move || {
            // No chunks/ yet is an empty cache; one that cannot be listed
            // (EIO, out of descriptors) is not: nothing is judged then.
            let entries = match lister.beneath().dir(&["chunks"], false) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
                Ok(d) => beneath::list(&d),
            };
            let entries = match entries {
                Ok(e) => e,
                Err(e) => return Err(e),
            };
            let mut ids: Vec<i64> = entries
                .into_iter()
                .filter(|e| e.kind == Kind::Dir)
                // Only the names spool makes ("12", not "012" or "+12"):
                // the directory a media's files are looked for in.
                .filter_map(|e| {
                    e.name
                        .parse::<i64>()
                        .ok()
                        .filter(|id| id.to_string() == e.name)
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let (listed, unreadable) = match listed {
            Ok(ids) => (ids, false),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cache's chunks; nothing checked this time");
                (Vec::new(), true)
            }
        };
        Walk {
            files: files.clone(),
            index: index.clone(),
            opts,
            dirs: listed,
            next_dir: 0,
            rows_batch: Default::default(),
            rows_after: i64::MIN,
            rows_done: unreadable,
            throttle: Throttle::new(opts.rate),
        }
    }

    /// The report of the next media; None when every one was looked at.
    pub async fn next(&mut self) -> Result<Option<Report>, IndexError> {
        if self.rows_batch.is_empty() && !self.rows_done {
            let batch = self
                .index
                .media_with_chunks(self.rows_after, MEDIA_BATCH)
                .await?;
            self.rows_done = batch.len() < MEDIA_BATCH as usize;
            if let Some(last) = batch.last() {
                self.rows_after = last.0;
            }
            self.rows_batch = batch.into_iter().map(|m| m.0).collect();
        }
        let dir = self.dirs.get(self.next_dir).copied();
        let row = self.rows_batch.front().copied();
        let id = match (dir, row) {
            (None, None) => return Ok(None),
            (Some(d), Some(r)) => d.min(r),
            (Some(d), None) => d,
            (None, Some(r)) => r,
        };
        if dir == Some(id) {
            self.next_dir += 1;
        }
        let rows = if row == Some(id) {
            self.rows_batch.pop_front();
            self.index.chunk_rows(MediaId(id)).await?
        } else {
            Vec::new()
        };
        let (files, opts) = (self.files.clone(), self.opts);
        let has_dir = dir == Some(id);
        let throttle = std::mem::replace(&mut self.throttle, Throttle::new(None));
        let (report, throttle) = tokio::task::spawn_blocking(move || {
            let mut throttle = throttle;
            let report = scan_media(&files, MediaId(id), has_dir, rows, opts, &mut throttle);
            (report, throttle)
        })
        .await
        .map_err(|_| IndexError::Closed)?;
        self.throttle = throttle;
        Ok(Some(report))
    }
}

/// Paces the bytes a scan reads for checksums.
struct Throttle {
    rate: Option<u64>,
    start: std::time::Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            start: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// `n` more bytes were read: sleeps until they fit the rate. Blocking.
    fn read(&mut self, n: u64) {
        let Some(rate) = self.rate else { return };
        self.bytes += n;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// One media's files compared with its rows. Blocking.
fn scan_media(
    files: &ChunkFiles,
    media_id: MediaId,
    has_dir: bool,
    rows: Vec<(ChunkRow, i64)>,
    opts: ScanOptions,
    throttle: &mut Throttle,
) -> Report {
    let since_unix = opts.since.map(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let mut rows: HashMap<u64, (ChunkRow, i64)> = rows
        .into_iter()
        .map(|(c, created)| (c.chunk_index, (c, created)))
        .collect();
    let mut report = Report::default();
    let cache = files.beneath();
    let dir_name = media_id.0.to_string();
    // A directory that cannot be opened or listed now (EIO, out of
    // descriptors) says nothing of its files: the media is looked at next
    // time, and none of its rows is taken for missing.
    let (fd, listed) = match has_dir {
        false => (None, Vec::new()),
        true => match cache
            .dir(&["chunks", &dir_name], false)
            .and_then(|fd| beneath::list(&fd).map(|l| (fd, l)))
        {
            Ok((fd, l)) => (Some(fd), l),
            Err(_) => return report,
        },
    };
    for f in listed {
        let Some(fd) = fd.as_ref() else { break };
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
                report.push(Problem::Temp(path));
            }
            FileKind::Temp => {}
            FileKind::Chunk(chunk) => {
                let Some((row, _)) = rows.remove(&chunk) else {
                    if !recent {
                        report.inodes.insert(path.clone(), f.ino);
                        report.push(Problem::Orphan(path));
                    }
                    continue;
                };
                if recent {
                    continue;
                }
                report.chunks_checked += 1;
                if f.len != row.size_bytes {
                    report.push(Problem::WrongLength {
                        media_id,
                        chunk,
                        write_id: row.write_id,
                        path,
                    });
                    continue;
                }
                if opts.checksums {
                    report.bytes_checked += f.len;
                    let good = beneath::open_read(fd, &f.name)
                        .and_then(|file| check_reader(file, row.size_bytes, row.crc32c));
                    throttle.read(f.len);
                    // Only bytes found wrong make a chunk corrupt; a file
                    // that cannot be read now (out of descriptors,
                    // vanished meanwhile) is looked at next time.
                    if matches!(good, Ok(false)) {
                        report.push(Problem::Corrupt {
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
    for (chunk, (row, created)) in rows {
        if since_unix.is_none_or(|s| created < s) {
            report.push(Problem::Missing {
                media_id,
                chunk,
                write_id: row.write_id,
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::recover::open_index;
    use bytes::Bytes;
    use std::fs;

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
        let media = crate::store::MediaRow::for_test(0, "http://x/", 10, 10);
        let (id, _) = index.replace_media(media).await.unwrap();
        let good = Bytes::from(vec![7u8; 10]);
        let crc = files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        index.insert_chunk(id, row(0, crc)).await.unwrap();
        // The disk flips a byte: the scan finds the chunk corrupt.
        fs::write(files.chunk_path(id, 0), [9u8; 10]).unwrap();
        let opts = ScanOptions {
            checksums: true,
            since: None,
            rate: None,
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
        let media = crate::store::MediaRow::for_test(0, "http://x/", 10, 10);
        let (id, _) = index.replace_media(media).await.unwrap();
        let good = Bytes::from(vec![7u8; 10]);
        files.write(id, 0, std::slice::from_ref(&good)).unwrap();
        let opts = ScanOptions {
            checksums: false,
            since: None,
            rate: None,
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
            .replace_media(crate::store::MediaRow::for_test(0, "http://x/", 40, 10))
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
            rate: None,
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
}
