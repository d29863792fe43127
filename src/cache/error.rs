//! Why bytes of a media could not be had.

use crate::upstream::UpstreamError;

/// Why bytes of a media could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CacheError {
    /// No player wanted the chunk any more; whoever wants it next fetches
    /// it.
    #[error("download cancelled")]
    Cancelled,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl CacheError {
    /// Whether the origin's copy changed (the cached version is dropped).
    pub fn is_changed(&self) -> bool {
        matches!(self, CacheError::Upstream(UpstreamError::Changed))
    }
}
