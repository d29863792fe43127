//! A failed cache write: its class, the stage that failed, and the path.

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
