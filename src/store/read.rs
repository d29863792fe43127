//! Reading chunk files into pooled buffers: page-cache hits right on the
//! async thread (`preadv2` with `RWF_NOWAIT` never waits for the disk),
//! everything else on a blocking thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::io::{Errno, ReadWriteFlags};

/// Buffers for reads from chunk files, reused so that serving from the
/// cache does not allocate (and fault in) fresh memory for every piece.
#[derive(Debug)]
pub(crate) struct BufPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// Buffers of `size` bytes; at most `keep` idle ones are kept.
    pub fn new(size: usize, keep: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
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

    /// Idle buffers kept for reuse.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap().len()
    }

    /// A buffer for `len` bytes; a read larger than the pool's buffers is
    /// a caller's bug, refused rather than trusted.
    fn buffer_for(&self, len: usize) -> io::Result<Vec<u8>> {
        if len > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read of {len} bytes exceeds the {} byte buffers", self.size),
            ));
        }
        Ok(self.take())
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
pub(crate) fn read_cached(
    file: &File,
    offset: u64,
    len: usize,
    pool: &Arc<BufPool>,
) -> io::Result<Option<Bytes>> {
    let mut buf = pool.buffer_for(len)?;
    let mut done = 0;
    while done < len {
        let mut iov = [io::IoSliceMut::new(&mut buf[done..len])];
        match rustix::io::preadv2(file, &mut iov, offset + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                pool.give(buf);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunk file is short",
                ));
            }
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            // Not in the page cache, or RWF_NOWAIT unsupported here.
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
                pool.give(buf);
                return Ok(None);
            }
            Err(e) => {
                pool.give(buf);
                return Err(e.into());
            }
        }
    }
    Ok(Some(Bytes::from_owner(Pooled {
        buf,
        len,
        pool: pool.clone(),
    })))
}

/// Reads exactly `len` bytes at `offset`. Blocking.
pub(crate) fn read_at(
    file: &File,
    offset: u64,
    len: usize,
    pool: &Arc<BufPool>,
) -> io::Result<Bytes> {
    let mut buf = pool.buffer_for(len)?;
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

    /// A read longer than the pool's buffers is an error, not a write past
    /// the buffer's end.
    #[test]
    fn reads_longer_than_a_buffer_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64]).unwrap();
        let file = File::open(&path).unwrap();
        let pool = BufPool::new(16, 1);
        assert!(read_cached(&file, 0, 16, &pool).unwrap().is_some());
        assert_eq!(
            read_cached(&file, 0, 64, &pool).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            read_at(&file, 0, 64, &pool).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
