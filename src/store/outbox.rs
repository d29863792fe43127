//! Pieces of chunk files a connection sends with `sendfile(2)`: the
//! kernel moves their pages to the socket, and no byte of them passes
//! through spool (no read into a buffer, no copy into the socket).
//!
//! hyper writes what a response body yields; it has no way to send a
//! file. So a body yields a *stand-in* for each file piece: a `Bytes` of
//! the piece's length pointing into `stand_ins()`, memory nothing else
//! points into, and queues the piece in its connection's `Outbox`. The
//! connection's socket (`http/sendfile.rs`) finds the stand-in among the
//! buffers hyper writes, by its address, and sends the queued piece's
//! bytes from the file in its place.
//!
//! hyper writes a connection's buffers in the order it was given them, so
//! the queue's front is the piece of the first stand-in the socket meets.
//! That is checked, not trusted: each queued piece has a slot of its own
//! among the stand-ins (one of `SLOTS`, in turn, none overlapping), and a
//! stand-in that is not exactly what is left of the front piece (its
//! address and length) is an error that closes the connection, never
//! another piece's bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

/// Largest file piece a body yields at once.
pub(crate) const MAX_FILE_PIECE: usize = 512 * 1024;

/// Stand-ins are taken in turn from `SLOTS` slots of `MAX_FILE_PIECE`
/// bytes that do not overlap: a piece's stand-in is the only one in its
/// slot until `SLOTS` more pieces were queued (hyper holds at most 16
/// buffers of a connection).
const SLOTS: usize = 64;
const STAND_INS_LEN: usize = SLOTS * MAX_FILE_PIECE;

/// Never read: only its addresses mean anything. Allocated zeroed once
/// (fresh pages the process never touches, so no memory in use).
fn stand_ins() -> &'static [u8] {
    static STAND_INS: OnceLock<&'static [u8]> = OnceLock::new();
    STAND_INS.get_or_init(|| vec![0u8; STAND_INS_LEN].leak())
}

/// Bytes `[offset, offset + len)` of a chunk file.
#[derive(Debug, Clone)]
pub(crate) struct FilePiece {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: usize,
}

/// A queued piece: where its stand-in starts in `stand_ins()`, how much of
/// it was sent.
#[derive(Debug)]
struct Queued {
    piece: FilePiece,
    at: usize,
    sent: usize,
}

#[derive(Debug, Default)]
struct Queue {
    pieces: VecDeque<Queued>,
    next_slot: usize,
}

/// A connection's file pieces waiting for the socket, and the bytes its
/// socket took. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    queue: Arc<Mutex<Queue>>,
    written: Arc<AtomicU64>,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues `piece` and gives the stand-in the body yields in its place;
    /// None for an empty piece or one larger than `MAX_FILE_PIECE`.
    pub fn stand_in(&self, piece: FilePiece) -> Option<Bytes> {
        if piece.len == 0 || piece.len > MAX_FILE_PIECE {
            return None;
        }
        let mut q = self.queue.lock().unwrap();
        let at = q.next_slot * MAX_FILE_PIECE;
        q.next_slot = (q.next_slot + 1) % SLOTS;
        let len = piece.len;
        q.pieces.push_back(Queued { piece, at, sent: 0 });
        Some(Bytes::from_static(&stand_ins()[at..at + len]))
    }

    /// Counts bytes the connection's socket took.
    pub fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes the connection's socket took so far (any of its responses').
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether `buf` is (what is left of) a stand-in.
    pub fn is_stand_in(buf: &[u8]) -> bool {
        let base = stand_ins().as_ptr() as usize;
        let p = buf.as_ptr() as usize;
        !buf.is_empty() && p >= base && p < base + STAND_INS_LEN
    }

    /// Sends what is left of the front piece, whose stand-in (or what is
    /// left of it) is `buf`, with `send(file, offset, len)`, which returns
    /// how many bytes it sent; the piece leaves the queue once sent whole.
    /// A `buf` that is not what is left of the front piece, or a file that
    /// ends before the piece does, is an error.
    pub fn send_front(
        &self,
        buf: &[u8],
        send: impl FnOnce(&File, u64, usize) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut q = self.queue.lock().unwrap();
        let Some(front) = q.pieces.front_mut() else {
            return Err(out_of_step("no file piece is queued"));
        };
        let left = front.piece.len - front.sent;
        let expected = stand_ins()[front.at + front.sent..].as_ptr();
        if buf.as_ptr() != expected || buf.len() != left {
            return Err(out_of_step(
                "the bytes written are not the queued file piece",
            ));
        }
        let n = send(
            &front.piece.file,
            front.piece.offset + front.sent as u64,
            left,
        )?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk file ends before the piece being sent",
            ));
        }
        front.sent += n.min(left);
        if front.sent == front.piece.len {
            q.pieces.pop_front();
        }
        Ok(n.min(left))
    }

    /// Pieces queued and not yet sent whole.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap().pieces.len()
    }
}

fn out_of_step(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("response out of step with its file pieces: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn piece(file: &Arc<File>, offset: u64, len: usize) -> FilePiece {
        FilePiece {
            file: file.clone(),
            offset,
            len,
        }
    }

    fn file(bytes: &[u8]) -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, bytes).unwrap();
        (dir, Arc::new(File::open(&path).unwrap()))
    }

    /// Reads what `send_front` asks for into `out`, at most `most` bytes.
    fn read_into(
        out: &mut Vec<u8>,
        most: usize,
    ) -> impl FnOnce(&File, u64, usize) -> io::Result<usize> + '_ {
        move |f, off, len| {
            let mut buf = vec![0; len.min(most)];
            let n = f.read_at(&mut buf, off)?;
            out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    /// Pieces are sent in order, each from its own offset, in as many
    /// partial sends as the socket takes; stand-ins are told apart from
    /// any other bytes.
    #[test]
    fn pieces_go_out_in_order_across_partial_sends() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (_d, f) = file(&data);
        let outbox = Outbox::new();
        let a = outbox.stand_in(piece(&f, 100, 3000)).unwrap();
        let b = outbox.stand_in(piece(&f, 5000, 4000)).unwrap();
        assert_eq!((a.len(), b.len()), (3000, 4000));
        assert!(Outbox::is_stand_in(&a) && Outbox::is_stand_in(&b));
        assert!(!Outbox::is_stand_in(&data));
        assert!(!Outbox::is_stand_in(&a[..0]));
        assert_ne!(a.as_ptr(), b.as_ptr(), "each piece has its own stand-in");
        let mut out = Vec::new();
        let mut left = a.clone();
        while !left.is_empty() {
            let n = outbox.send_front(&left, read_into(&mut out, 1000)).unwrap();
            let _ = left.split_to(n);
        }
        assert_eq!(outbox.queued(), 1);
        let n = outbox
            .send_front(&b, read_into(&mut out, usize::MAX))
            .unwrap();
        assert_eq!(n, 4000);
        assert_eq!(outbox.queued(), 0);
        let mut want = data[100..3100].to_vec();
        want.extend_from_slice(&data[5000..9000]);
        assert_eq!(out, want);
    }

    /// A stand-in that is not what is left of the front piece (another
    /// piece's, a wrong length, nothing queued) sends nothing.
    #[test]
    fn a_stand_in_out_of_step_is_refused() {
        let (_d, f) = file(&[1; 8192]);
        let outbox = Outbox::new();
        let a = outbox.stand_in(piece(&f, 0, 4096)).unwrap();
        let b = outbox.stand_in(piece(&f, 0, 4096)).unwrap();
        let never = |_: &File, _: u64, _: usize| -> io::Result<usize> { panic!("sent") };
        // The same length, the next piece's stand-in.
        let e = outbox.send_front(&b, never).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // The front piece's, shorter than what is left of it.
        assert!(outbox.send_front(&a[..100], never).is_err());
        assert!(outbox.send_front(&a[1..], never).is_err());
        let other = Outbox::new();
        assert!(other.send_front(&a, never).is_err(), "nothing queued");
        assert_eq!(outbox.queued(), 2);
    }

    /// A file shorter than its piece is an error, not a short response.
    #[test]
    fn a_short_file_is_an_error() {
        let (_d, f) = file(&[1; 100]);
        let outbox = Outbox::new();
        let a = outbox.stand_in(piece(&f, 0, 200)).unwrap();
        let mut out = Vec::new();
        let n = outbox
            .send_front(&a, read_into(&mut out, usize::MAX))
            .unwrap();
        assert_eq!(n, 100);
        let e = outbox
            .send_front(&a[100..], read_into(&mut out, usize::MAX))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn empty_and_oversized_pieces_get_no_stand_in() {
        let (_d, f) = file(&[1; 10]);
        let outbox = Outbox::new();
        assert!(outbox.stand_in(piece(&f, 0, 0)).is_none());
        assert!(outbox.stand_in(piece(&f, 0, MAX_FILE_PIECE + 1)).is_none());
        assert!(outbox.stand_in(piece(&f, 0, MAX_FILE_PIECE)).is_some());
    }
}
