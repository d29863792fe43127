//! A real small filesystem for tests that need a full or read-only disk
//! (root needed, as CI runs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    pub fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Tmpfs::mount_at(dir.path().to_owned(), size_mib);
        fs._dir = Some(dir);
        fs
    }

    pub fn mount_at(path: PathBuf, size_mib: u64) -> Tmpfs {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the disk tests mount a tmpfs and must run as root (CI does)"
        );
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0777"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {path:?}");
        Tmpfs { path, _dir: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remounts with `opt`. Going read-only fails (EBUSY) while a file on
    /// the filesystem is open for writing: callers wait for spool's chunk
    /// writes to end first.
    pub fn remount(&self, opt: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o remount,{opt} {:?}: {}",
            self.path(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn free(&self) -> u64 {
        spool::disk::space(self.path()).unwrap().free_bytes
    }

    /// Fills the filesystem until `leave` bytes are free.
    pub fn ballast(&self, leave: u64) -> PathBuf {
        let path = self.path().join("ballast");
        let size = self.free().saturating_sub(leave);
        let f = std::fs::File::create(&path).unwrap();
        let status = Command::new("fallocate")
            .args(["-l", &size.to_string()])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        drop(f);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
