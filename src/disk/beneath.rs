//! Files and directories under the cache directory, reached without ever
//! following a symlink: every directory below the configured cache
//! directory is opened with `O_NOFOLLOW | O_DIRECTORY`, one component at a
//! time, and files are created, opened, renamed and removed relative to
//! those directory descriptors (`O_NOFOLLOW` on the last component too).
//! A symlink planted inside the cache (`chunks/1 -> /elsewhere`) makes the
//! operation fail with ELOOP or ENOTDIR instead of reaching outside. Only
//! the configured cache directory itself may be a symlink.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// The cache directory. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Beneath {
    root: PathBuf,
}

/// What a directory listing tells of one entry (never following it).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    /// Tells this file from one renamed into its place since.
    pub ino: u64,
    pub kind: Kind,
    pub len: u64,
    pub modified: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// A symlink or anything else spool never made.
    Other,
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

impl Beneath {
    pub fn new(root: &Path) -> Beneath {
        Beneath {
            root: root.to_owned(),
        }
    }

    /// Opens the directory `rel` (names, no separators) under the cache
    /// directory; with `create`, missing ones are made. Blocking.
    pub fn dir(&self, rel: &[&str], create: bool) -> io::Result<OwnedFd> {
        super::blocking::blocking_call();
        let mut fd = rustix::fs::open(
            &self.root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for name in rel {
            check_name(name)?;
            if create {
                match rustix::fs::mkdirat(&fd, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            fd = rustix::fs::openat(&fd, *name, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }
}

/// Refuses names that would leave their directory.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

/// Creates a new file (it must not exist) in `dir`. Blocking.
pub(crate) fn create_new(dir: &OwnedFd, name: &str) -> io::Result<File> {
    check_name(name)?;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644))?;
    Ok(File::from(fd))
}

/// Opens (creating it if missing) a file in `dir` for reading and
/// writing, mode 0600; a symlink is refused. Blocking.
pub(crate) fn open_or_create(dir: &OwnedFd, name: &str) -> io::Result<File> {
    check_name(name)?;
    let flags = OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?;
    Ok(File::from(fd))
}

/// Opens a regular file in `dir` for reading; a symlink is refused, and
/// so is anything else that is not a regular file (a FIFO, a device, a
/// socket planted in the cache), without ever blocking on it: the open is
/// non-blocking (a FIFO with no writer would otherwise hang the opener
/// for good), then the descriptor's type decides. `InvalidData` for a
/// file that is not regular. Blocking (on the disk only).
pub(crate) fn open_read(dir: &OwnedFd, name: &str) -> io::Result<File> {
    check_name(name)?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is not a regular file ({kind:?})"),
        ));
    }
    // Reads of a regular file never wait on O_NONBLOCK; cleared anyway,
    // so the descriptor is what any other open would give.
    rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

/// Renames within or between directories; the names themselves are never
/// followed. Blocking.
pub(crate) fn rename(from_dir: &OwnedFd, from: &str, to_dir: &OwnedFd, to: &str) -> io::Result<()> {
    check_name(from)?;
    check_name(to)?;
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// Removes a file only if it still is the file `ino` (not one renamed
/// into its place since it was looked at). Returns whether it did.
/// Blocking.
pub(crate) fn remove_if(dir: &OwnedFd, name: &str, ino: u64) -> io::Result<bool> {
    check_name(name)?;
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if st.st_ino != ino {
        return Ok(false);
    }
    remove(dir, name)?;
    Ok(true)
}

/// Removes a file (or a symlink itself, never its target). Blocking.
pub(crate) fn remove(dir: &OwnedFd, name: &str) -> io::Result<()> {
    check_name(name)?;
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the directory `name` in `parent` with the files in it; a
/// symlink in its place is removed as a link. Blocking.
pub(crate) fn remove_dir_all(parent: &OwnedFd, name: &str) -> io::Result<()> {
    check_name(name)?;
    let dir = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(d) => d,
        // A symlink or a file where the directory was: remove the entry.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return remove(parent, name),
        Err(e) => return Err(e.into()),
    };
    for e in list(&dir)? {
        if e.kind == Kind::Dir {
            let _ = remove_dir_all(&dir, &e.name);
        } else {
            let _ = remove(&dir, &e.name);
        }
    }
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// The entries of `dir` (not `.` and `..`), each stat'ed without following
/// it. Blocking.
pub(crate) fn list(dir: &OwnedFd) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        // Vanished meanwhile: skip it.
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            _ => Kind::Other,
        };
        let modified = SystemTime::UNIX_EPOCH
            + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        out.push(Entry {
            name: name.to_owned(),
            ino: st.st_ino,
            kind,
            len: st.st_size.max(0) as u64,
            modified,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_inside_are_never_followed() {
        let cache = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("0.chunk"), b"theirs").unwrap();
        let b = Beneath::new(cache.path());
        // A real directory works.
        let d = b.dir(&["chunks", "2"], true).unwrap();
        create_new(&d, "x").unwrap().write_all(b"ours").unwrap();
        assert_eq!(
            std::fs::read(cache.path().join("chunks/2/x")).unwrap(),
            b"ours"
        );
        // chunks/1 -> outside: opening, creating and listing refuse it.
        symlink(outside.path(), cache.path().join("chunks/1")).unwrap();
        assert!(b.dir(&["chunks", "1"], true).is_err());
        let chunks = b.dir(&["chunks"], false).unwrap();
        let entries = list(&chunks).unwrap();
        let one = entries.iter().find(|e| e.name == "1").unwrap();
        assert_eq!(one.kind, Kind::Other);
        // A symlinked file is not opened.
        symlink(
            outside.path().join("0.chunk"),
            cache.path().join("chunks/2/0.chunk"),
        )
        .unwrap();
        assert!(open_read(&d, "0.chunk").is_err());
        // A FIFO (or any file that is not regular) is refused at once,
        // never waited on for a writer.
        rustix::fs::mknodat(&d, "7.chunk", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo_dir = b.dir(&["chunks", "2"], false).unwrap();
        std::thread::spawn(move || tx.send(open_read(&fifo_dir, "7.chunk").map(|_| ())));
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("open_read of a FIFO returned");
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Removing the symlinked directory removes the link only.
        remove_dir_all(&chunks, "1").unwrap();
        assert!(!cache.path().join("chunks/1").exists());
        assert_eq!(
            std::fs::read(outside.path().join("0.chunk")).unwrap(),
            b"theirs"
        );
        assert!(check_name("..").is_err() && check_name("a/b").is_err());
    }
}
