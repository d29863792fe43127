//! The cache directory and the index are spool's user's alone: the index
//! holds every upstream URL with its query (credentials such as
//! `api_key=` among them). New ones are created private (0700, 0600);
//! existing ones readable by others are tightened at start, with a line
//! in the log saying so.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The index's files: the database and SQLite's WAL and shared memory
/// beside it (which SQLite creates with the database's own mode).
pub const INDEX_FILES: [&str; 3] = ["index.db", "index.db-wal", "index.db-shm"];

/// Creates `dir` (and missing parents) mode 0700, or tightens an existing
/// one, and its index files, to spool's user alone. Blocking.
pub fn make_private(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    tighten(dir, 0o700)?;
    for name in INDEX_FILES {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => tighten(&path, 0o600)?,
            // A symlink or anything else is left alone (and refused
            // where it is opened).
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // A new index starts private: SQLite gives the WAL and shared memory
    // files the database's mode.
    let index = dir.join(INDEX_FILES[0]);
    // (Exclusive creation never follows a symlink.)
    use std::os::unix::fs::OpenOptionsExt;
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&index);
    match created {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Takes group and other permissions off `path` when it has any.
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    let had = meta.permissions().mode() & 0o777;
    if had & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    tracing::info!(
        path = %path.display(),
        was = %format!("{had:04o}"),
        now = %format!("{mode:04o}"),
        "readable by others; now spool's user's alone"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_existing_ones_end_private() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/cache");
        make_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("index.db")), 0o600);
        let old = tmp.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        for name in INDEX_FILES {
            fs::write(old.join(name), b"").unwrap();
            fs::set_permissions(old.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_private(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        for name in INDEX_FILES {
            assert_eq!(mode(&old.join(name)), 0o600, "{name}");
        }
        // A mode with fewer rights than private stays as it is.
        fs::set_permissions(old.join("index.db"), fs::Permissions::from_mode(0o400)).unwrap();
        make_private(&old).unwrap();
        assert_eq!(mode(&old.join("index.db")), 0o400);
    }
}
