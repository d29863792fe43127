//! Whether a stretch of a chunk file is in the page cache, asked before
//! it is sent with `sendfile(2)` on an async thread: sendfile waits for
//! the disk when it is not, and a waiting async thread holds every other
//! connection it serves. What is not all there is read the way that
//! never waits (`read.rs`).
//!
//! The kernel answers with `cachestat(2)` (Linux 6.5). rustix does not
//! wrap it yet, so it is called through `libc::syscall`. Where the kernel
//! cannot answer (older, or a seccomp filter refusing the call) the
//! answer is always "no", and the call is not made again. A page the
//! kernel is still reading in (read-ahead under way) counts as cached:
//! callers ask before their own reads start more (`cache/cached.rs`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel refused `cachestat`.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The `cachestat` number: 451 on every architecture that has the unified
/// table of new calls (None elsewhere: never asked).
const SYS_CACHESTAT: Option<libc::c_long> = if cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)) {
    Some(451)
} else {
    None
};

/// `struct cachestat_range` of `<linux/mman.h>`.
#[repr(C)]
struct Range {
    off: u64,
    len: u64,
}

/// `struct cachestat` of `<linux/mman.h>`.
#[repr(C)]
#[derive(Default)]
struct Stat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether bytes `[offset, offset + len)` of `file` are all there and in
/// the page cache; false when the kernel cannot tell.
#[allow(unsafe_code)]
pub(crate) fn resident(file: &File, offset: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let Some(nr) = SYS_CACHESTAT else {
        return false;
    };
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live
    // `repr(C)` values of the kernel's layout, for the call's duration;
    // the descriptor is borrowed from `file`, open for the call.
    let r = unsafe {
        libc::syscall(
            nr,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // Not there (ENOSYS), or refused for every file (a seccomp filter:
        // EPERM); said once, as sendfile is then never used.
        if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
            && !UNSUPPORTED.swap(true, Ordering::Relaxed)
        {
            tracing::info!(error = %e, "the kernel does not tell what is in the page cache (cachestat); cached chunks are read and written out, not sent with sendfile");
        }
        return false;
    }
    let page = rustix::param::page_size() as u64;
    let pages = (offset + len - 1) / page - offset / page + 1;
    if stat.nr_cache < pages {
        return false;
    }
    // A file cut short keeps the large folio its new end falls in, so
    // pages past its end can still count as cached: its length decides.
    rustix::fs::fstat(file).is_ok_and(|st| st.st_size as u64 >= offset + len)
}

/// Whether the kernel answers `cachestat` here (tests that need it ask).
#[cfg(any(test, feature = "testing"))]
pub fn supported() -> bool {
    let Ok(f) = File::open("/proc/self/exe") else {
        return false;
    };
    resident(&f, 0, 1);
    SYS_CACHESTAT.is_some() && !UNSUPPORTED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file just written is in the page cache; a stretch past its end
    /// is not.
    #[test]
    fn written_pages_are_resident_and_past_the_end_is_not() {
        if !supported() {
            eprintln!("cachestat is not answered here; nothing to check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, vec![5u8; 256 * 1024]).unwrap();
        let f = File::open(&path).unwrap();
        assert!(resident(&f, 0, 256 * 1024));
        assert!(resident(&f, 1000, 5000));
        assert!(!resident(&f, 200 * 1024, 100 * 1024));
        assert!(!resident(&f, 1 << 30, 4096));
        // Cut short: its cached pages past the new end do not count.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(resident(&f, 0, 100));
        assert!(!resident(&f, 0, 4096));
    }
}
