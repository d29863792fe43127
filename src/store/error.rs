//! A failed cache write: its class, the stage that failed, and the path;
//! a failed index call, and the class of a failed index write.

use std::io;
use std::path::PathBuf;

use crate::disk::WriteClass;

/// The stage of a write that failed, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStage {
    CreateDir,
    Open,
    Write,
    Sync,
    Rename,
    /// Recording the chunk in the index (after the rename).
    Index,
    /// Recording a new media version in the index.
    MediaRow,
}

#[derive(Debug, thiserror::Error)]
#[error("{class} while {stage:?} {path}: {source}")]
pub(crate) struct WriteError {
    pub class: WriteClass,
    pub stage: WriteStage,
    pub path: PathBuf,
    pub source: io::Error,
}

impl WriteError {
    /// A write that could not even run (its task died).
    pub fn other(e: impl std::fmt::Display) -> WriteError {
        WriteError {
            class: WriteClass::Io,
            stage: WriteStage::Write,
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("index schema version {found} is newer than this spool understands ({known})")]
    FromTheFuture { found: i64, known: i64 },
    #[error("index failed its integrity check: {0}")]
    Corrupt(String),
    #[error("index thread has stopped")]
    Closed,
    /// A failure injected by tests (see `Store::inject`).
    #[error("index write: {0}")]
    Injected(std::io::Error),
}

impl IndexError {
    /// The class of a failed index write, as for chunk files: the index lives
    /// on the same disk and fails for the same reasons.
    pub(crate) fn write_class(&self) -> WriteClass {
        use rusqlite::ErrorCode;
        match self {
            IndexError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => match f.code {
                ErrorCode::DiskFull => WriteClass::DiskFull,
                ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
                    WriteClass::PermissionDenied
                }
                _ => WriteClass::Io,
            },
            IndexError::Injected(e) => WriteClass::classify(e),
            _ => WriteClass::Io,
        }
    }

    /// Whether an index write failed on a foreign key: its media version is
    /// no longer in the index.
    pub(crate) fn is_foreign_key(&self) -> bool {
        matches!(
            self,
            IndexError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
        )
    }
}
