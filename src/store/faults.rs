//! Write failures injected on purpose, for what a real filesystem cannot
//! produce on demand (EDQUOT, a failing rename or fsync, a failure in the
//! middle of a chunk, a full index). Compiled only into test builds
//! (`cfg(test)` or the `testing` feature the integration tests enable).

use std::io;
use std::sync::{Arc, Mutex};

use super::error::WriteStage;

/// One injected failure.
#[derive(Debug, Clone)]
pub struct Fault {
    pub stage: WriteStage,
    /// The errno the stage fails with.
    pub errno: i32,
    /// How many writes fail (then the fault is gone).
    pub times: u32,
    /// For `Write`: bytes written before the failure.
    pub after_bytes: usize,
}

/// The armed faults, shared by clones of the chunk files handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults(Arc<Mutex<Vec<Fault>>>);

impl Faults {
    pub fn push(&self, fault: Fault) {
        self.0.lock().unwrap().push(fault);
    }

    /// The failure armed for this stage, if any, with the bytes to write
    /// before failing.
    pub fn take(&self, stage: WriteStage) -> Option<(io::Error, usize)> {
        let mut faults = self.0.lock().unwrap();
        let i = faults
            .iter()
            .position(|f| f.stage == stage && f.times > 0)?;
        faults[i].times -= 1;
        let f = faults[i].clone();
        faults.retain(|f| f.times > 0);
        Some((io::Error::from_raw_os_error(f.errno), f.after_bytes))
    }
}
