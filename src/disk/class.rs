//! The three classes of cache write failures. Every write error is
//! classified once, where it happens (chunk files, the index, the probe
//! write), so logs and metrics speak of the same three classes.

use std::io;

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

/// EMFILE or ENFILE: the process or the system has no file descriptor
/// left. Connections hold them too; it says nothing about the disk, so it
/// is never a write class, and a chunk that cannot be opened for it is
/// not bad.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

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
