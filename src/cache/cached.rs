//! The cached-chunk side of a response body (`body.rs`): a chunk file's
//! stretches in the page cache handed to the connection to send itself
//! (sendfile), the rest read into the body piece by piece (page-cache
//! hits right on the async thread), checking a chunk this process did not write against its
//! checksum first, and setting aside a file that cannot be read so the
//! chunk comes from the origin again, from the exact byte.

use std::io;

use tracing::{debug, warn};

use super::body::{Piece, Retry, Sender, READ_PIECE};
use crate::history::{Event, Kind};
use crate::store::outbox::{FilePiece, MAX_FILE_PIECE};
use crate::store::read::{read_at, read_cached};
use crate::store::resident::resident;
use crate::store::ChunkRow;

impl Sender<'_> {
    /// Sends `[pos, last]` of a cached chunk. A file that cannot be read is
    /// dropped from the cache and the chunk fetched again.
    /// Sends `[pos, last]` of a cached chunk; `warm`: it was cached before
    /// this player began (its bytes earn read-ahead one chunk at most).
    pub(super) async fn send_cached(
        &mut self,
        index: u64,
        row: ChunkRow,
        verified: bool,
        warm: bool,
        pos: &mut u64,
        last: u64,
    ) -> Result<(), Retry> {
        let media = self.media;
        let start = media.chunk_start(index);
        let files = self.cache.files.clone();
        // Only chunks of recorded media are ever cached.
        let Some(id) = media.id() else {
            return Err(Retry::Again);
        };
        // A chunk this process did not write is checked against its
        // checksum before its first byte is served. A checked chunk read
        // before is still open: no trip to a blocking thread.
        let kept = match verified {
            true => files.kept_open(id, index, row.size_bytes),
            false => None,
        };
        let opened = match kept {
            Some(f) => Ok(Ok(Some(f))),
            None => {
                tokio::task::spawn_blocking(move || {
                    let good = verified || files.verify(id, index, row.size_bytes, row.crc32c)?;
                    Ok::<_, io::Error>(match good {
                        true => Some(files.open(id, index, row.size_bytes)?),
                        false => None,
                    })
                })
                .await
            }
        };
        let file = match opened {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return self.corrupt(index).await,
            Ok(Err(e)) => return self.unreadable(index, e).await,
            Err(e) => return self.unreadable(index, io::Error::other(e)).await,
        };
        if !verified {
            media.mark_verified(index);
        }
        self.touched.push(index);
        // What is to be sent of this chunk, when it is all there and in the
        // page cache, goes from the file to the socket in the kernel, where
        // the connection can. Asked once for the whole stretch: a stretch
        // read because it was not all there brings pages in as it goes, and
        // the kernel's read-ahead past a read is still under way (its pages
        // counted as cached), so sendfile of the rest could wait for the
        // disk; it is read to its end the way that never does.
        let sendfile = self.file_pieces && resident(&file, *pos - start, last + 1 - *pos);
        while *pos <= last {
            let off = *pos - start;
            if sendfile {
                // Larger than read pieces: a file piece holds no memory.
                // A slow player takes a while to take one; its body waits
                // on as long as its connection takes bytes (`send_piece`).
                let n = (last + 1 - *pos).min(MAX_FILE_PIECE as u64);
                let piece = FilePiece {
                    file: file.clone(),
                    offset: off,
                    len: n as usize,
                };
                self.send_piece(Piece::File(piece), "cache")
                    .await
                    .map_err(|_| Retry::ClientGone)?;
                *pos += n;
                self.playhead.advance(*pos, n, warm);
                continue;
            }
            let n = (last + 1 - *pos).min(READ_PIECE) as usize;
            let pool = self.cache.files.pool();
            // Page-cache hits are read right here; only a read that would
            // wait for the disk goes to a blocking thread.
            let read = match read_cached(&file, off, n, pool) {
                Ok(Some(b)) => Ok(b),
                Ok(None) => {
                    let (f, pool) = (file.clone(), pool.clone());
                    tokio::task::spawn_blocking(move || read_at(&f, off, n, &pool))
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e)))
                }
                Err(e) => Err(e),
            };
            let bytes = match read {
                Ok(b) => b,
                Err(e) => return self.unreadable(index, e).await,
            };
            *pos += n as u64;
            self.send(bytes, "cache")
                .await
                .map_err(|_| Retry::ClientGone)?;
            self.playhead.advance(*pos, n as u64, warm);
        }
        Ok(())
    }

    /// A chunk whose bytes are not what was written: never served; the
    /// file goes to quarantine, its row away, and the chunk is fetched again.
    async fn corrupt(&self, index: u64) -> Result<(), Retry> {
        self.cache.metrics.corrupt_chunks.inc();
        self.set_aside(index, "checksum");
        warn!(
            media = self.media.id().map(|m| m.0),
            chunk = index,
            "cached chunk failed its checksum; quarantined, fetching it again"
        );
        self.retire(index, true).await
    }

    /// A chunk file that cannot be read: dropped and fetched again.
    async fn unreadable(&self, index: u64, e: io::Error) -> Result<(), Retry> {
        // Out of file descriptors (EMFILE, ENFILE): the chunk is fine; this
        // piece comes from the origin and the file stays.
        if crate::disk::out_of_descriptors(&e) {
            debug!(media = self.media.id().map(|m| m.0), chunk = index, error = %e, "cannot open a chunk now; serving from the origin");
            return Err(Retry::Broken);
        }
        self.cache.metrics.cache_read_errors.inc();
        warn!(media = self.media.id().map(|m| m.0), chunk = index, error = %e, "cached chunk unreadable; fetching it again");
        // Not what was written (a wrong length, not a regular file: a FIFO
        // or device planted there): kept aside for a look.
        let suspicious = e.kind() == io::ErrorKind::InvalidData;
        self.set_aside(index, if suspicious { "length" } else { "unreadable" });
        self.retire(index, suspicious).await
    }

    /// A bad chunk, for the history.
    fn set_aside(&self, index: u64, why: &str) {
        if let Some(id) = self.media.id() {
            let e = Event::new(Kind::Quarantine, crate::store::unix_now())
                .media(id.0)
                .chunk(index)
                .reason(why)
                .url(crate::upstream::redact(&self.media.url));
            self.cache.metrics.history.record(e);
        }
    }

    /// Removes a bad chunk's file and row while its slot holds a placeholder,
    /// so that no new download of the chunk races with the clean-up.
    async fn retire(&self, index: u64, keep_for_a_look: bool) -> Result<(), Retry> {
        let media = self.media;
        let Some(retired) = media.retire_cached(index) else {
            return Err(Retry::Again);
        };
        let cache = self.cache;
        if let Some(id) = media.id() {
            let files = cache.files.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if keep_for_a_look {
                    files.quarantine(id, index);
                } else {
                    files.remove(id, index);
                }
            })
            .await;
            if let Err(e) = cache.index.remove_chunk(id, index).await {
                debug!(error = %e, "cannot remove chunk row");
            }
        }
        drop(retired);
        Err(Retry::Broken)
    }
}
