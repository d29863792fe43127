//! The index's rows as spool holds them: a media version and its chunks.

/// The index's id of one media version (`media.media_id`); its chunk
/// files live in `chunks/<media_id>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(pub i64);

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl rusqlite::ToSql for MediaId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for MediaId {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(v).map(MediaId)
    }
}

/// What the index knows of one media version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// None until the index recorded it (or when it could not).
    pub media_id: Option<MediaId>,
    pub url: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub content_type: Option<String>,
    /// The Content-Encoding the origin sent anyway, if any.
    pub content_encoding: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub accepts_ranges: bool,
    /// When the origin last confirmed the validators.
    pub probed_unix: i64,
}

#[cfg(test)]
impl MediaRow {
    /// A media version for unit tests: ranges accepted, no validators.
    pub fn for_test(media_id: i64, url: &str, size_bytes: u64, chunk_size_bytes: u64) -> MediaRow {
        MediaRow {
            media_id: Some(MediaId(media_id)),
            url: url.into(),
            size_bytes,
            chunk_size_bytes,
            content_type: None,
            content_encoding: None,
            etag: None,
            last_modified: None,
            accepts_ranges: true,
            probed_unix: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRow {
    pub chunk_index: u64,
    pub size_bytes: u64,
    pub crc32c: u32,
    /// Tells this write of the chunk from any other (random).
    pub write_id: i64,
}

/// A playlist or manifest that never changes, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistRow {
    pub url: String,
    /// Where its redirects landed.
    pub final_url: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub fetched_unix: i64,
    /// Its origin's validators, for asking again conditionally.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl ChunkRow {
    /// The row of a chunk file just written.
    pub fn new(chunk_index: u64, size_bytes: u64, crc32c: u32) -> ChunkRow {
        ChunkRow {
            chunk_index,
            size_bytes,
            crc32c,
            write_id: rand::random(),
        }
    }
}
