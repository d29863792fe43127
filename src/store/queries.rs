//! What spool asks of the index: media versions by URL, their chunks,
//! what eviction and recovery need, access times. Each runs on the index
//! thread through [`Index::call`].

use rusqlite::{params, OptionalExtension};

use super::rows::{ChunkRow, MediaId, MediaRow, PlaylistRow};
use super::{unix_now, Index, IndexError};

/// Most playlists the index keeps...
const KEPT_PLAYLISTS: i64 = 10_000;
/// ... and most bytes of their bodies: an origin serving large "VOD
/// playlists" at many URLs cannot fill the disk through the index.
const KEPT_PLAYLIST_BYTES: i64 = 64 * 1024 * 1024;

impl Index {
    /// Keeps a playlist that never changes (replacing what was kept for
    /// its URL); past `KEPT_PLAYLISTS` rows or `KEPT_PLAYLIST_BYTES` of
    /// bodies, the least recently fetched go.
    pub async fn keep_playlist(&self, row: PlaylistRow) -> Result<(), IndexError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO playlists
                     (url, final_url, content_type, body, fetched_unix, etag, last_modified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.url,
                    row.final_url,
                    row.content_type,
                    row.body,
                    row.fetched_unix,
                    row.etag,
                    row.last_modified
                ],
            )?;
            tx.execute(
                "DELETE FROM playlists WHERE url IN (
                    SELECT url FROM (
                        SELECT url,
                               ROW_NUMBER() OVER newest AS n,
                               SUM(length(body)) OVER newest AS bytes
                        FROM playlists
                        WINDOW newest AS (ORDER BY fetched_unix DESC, url)
                    ) WHERE n > ?1 OR bytes > ?2)",
                [KEPT_PLAYLISTS, KEPT_PLAYLIST_BYTES],
            )?;
            tx.commit()
        })
        .await
    }

    /// Marks the playlist kept for `url` as fetched now (its origin said
    /// it did not change).
    pub async fn touch_playlist(&self, url: &str, unix: i64) -> Result<(), IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE playlists SET fetched_unix = ?2 WHERE url = ?1",
                params![url, unix],
            )
            .map(|_| ())
        })
        .await
    }

    /// The playlist kept for `url`, if any.
    pub async fn kept_playlist(&self, url: &str) -> Result<Option<PlaylistRow>, IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT url, final_url, content_type, body, fetched_unix, etag, last_modified
                 FROM playlists WHERE url = ?1",
                [&url],
                |r| {
                    Ok(PlaylistRow {
                        url: r.get(0)?,
                        final_url: r.get(1)?,
                        content_type: r.get(2)?,
                        body: r.get(3)?,
                        fetched_unix: r.get(4)?,
                        etag: r.get(5)?,
                        last_modified: r.get(6)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub async fn media(&self, url: &str) -> Result<Option<MediaRow>, IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT media_id, url, size_bytes, chunk_size_bytes, content_type, etag,
                        last_modified, accepts_ranges, probed_unix, content_encoding
                 FROM media WHERE url = ?1",
                [url],
                |r| {
                    Ok(MediaRow {
                        media_id: Some(r.get(0)?),
                        url: r.get(1)?,
                        size_bytes: r.get::<_, i64>(2)? as u64,
                        chunk_size_bytes: r.get::<_, i64>(3)? as u64,
                        content_type: r.get(4)?,
                        etag: r.get(5)?,
                        last_modified: r.get(6)?,
                        accepts_ranges: r.get(7)?,
                        probed_unix: r.get(8)?,
                        content_encoding: r.get(9)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records a new media version for `row.url`, replacing any older
    /// version (its chunk rows go with it). Returns the new media_id and the
    /// id of the version it replaced, whose files the caller removes.
    pub async fn replace_media(
        &self,
        row: MediaRow,
    ) -> Result<(MediaId, Option<MediaId>), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            let tx = c.transaction()?;
            let old: Option<MediaId> = tx
                .query_row(
                    "SELECT media_id FROM media WHERE url = ?1",
                    [&row.url],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute("DELETE FROM media WHERE url = ?1", [&row.url])?;
            tx.execute(
                "INSERT INTO media (url, size_bytes, chunk_size_bytes, content_type, etag,
                    last_modified, accepts_ranges, probed_unix, last_access_unix,
                    content_encoding)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![
                    row.url,
                    row.size_bytes as i64,
                    row.chunk_size_bytes as i64,
                    row.content_type,
                    row.etag,
                    row.last_modified,
                    row.accepts_ranges,
                    now,
                    row.content_encoding
                ],
            )?;
            let id = MediaId(tx.last_insert_rowid());
            tx.commit()?;
            Ok((id, old))
        })
        .await
    }

    /// Records that the origin confirmed a media version's validators now.
    pub async fn set_probed(&self, media_id: MediaId, unix: i64) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute(
                "UPDATE media SET probed_unix = ?2 WHERE media_id = ?1",
                params![media_id, unix],
            )
            .map(drop)
        })
        .await
    }

    /// Records the latest URL that reached a media known by its cache key,
    /// as shown (`upstream::shown_names`: no query value, no password).
    pub async fn set_latest_url(&self, media_id: MediaId, shown: String) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute(
                "UPDATE media SET latest_url = ?2 WHERE media_id = ?1",
                params![media_id, shown],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a media version and its chunk rows.
    pub async fn remove_media(&self, media_id: MediaId) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute("DELETE FROM media WHERE media_id = ?1", [media_id])
                .map(drop)
        })
        .await
    }

    pub async fn chunks(&self, media_id: MediaId) -> Result<Vec<ChunkRow>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT chunk_index, size_bytes, crc32c, write_id FROM chunks WHERE media_id = ?1",
            )?;
            let rows = st.query_map([media_id], |r| {
                Ok(ChunkRow {
                    chunk_index: r.get::<_, i64>(0)? as u64,
                    size_bytes: r.get::<_, i64>(1)? as u64,
                    crc32c: r.get::<_, i64>(2)? as u32,
                    write_id: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records a chunk whose file is complete and renamed into place.
    /// Fails (foreign key) when the media version was replaced meanwhile.
    pub async fn insert_chunk(&self, media_id: MediaId, chunk: ChunkRow) -> Result<(), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            c.prepare_cached(
                "INSERT OR REPLACE INTO chunks
                    (media_id, chunk_index, size_bytes, crc32c, created_unix, last_access_unix,
                     write_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            )?
            .execute(params![
                media_id,
                chunk.chunk_index as i64,
                chunk.size_bytes as i64,
                i64::from(chunk.crc32c),
                now,
                chunk.write_id
            ])
            .map(drop)
        })
        .await
    }

    pub async fn remove_chunk(
        &self,
        media_id: MediaId,
        chunk_index: u64,
    ) -> Result<(), IndexError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2",
                params![media_id, chunk_index as i64],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a chunk row if it still is the write `write_id`; returns
    /// whether it was.
    pub async fn remove_chunk_write(
        &self,
        media_id: MediaId,
        chunk_index: u64,
        write_id: i64,
    ) -> Result<bool, IndexError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2 AND write_id = ?3",
                params![media_id, chunk_index as i64, write_id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Removes media rows with no chunk left that nobody read since
    /// `before_unix`, except those in `open` (in use in this process), so
    /// the index stays proportional to what is cached. Returns how many.
    pub async fn forget_media(
        &self,
        before_unix: i64,
        open: Vec<MediaId>,
    ) -> Result<usize, IndexError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ids: Vec<MediaId> = {
                let mut st = tx.prepare_cached(
                    "SELECT media_id FROM media m
                     WHERE last_access_unix < ?1
                       AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.media_id = m.media_id)",
                )?;
                let rows = st.query_map([before_unix], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut n = 0;
            for id in ids.into_iter().filter(|id| !open.contains(id)) {
                n += tx.execute("DELETE FROM media WHERE media_id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Up to `limit` ids of media that have chunk rows, ascending, after
    /// `after`: a scan walks the index a batch at a time.
    pub async fn media_with_chunks(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<MediaId>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT media_id FROM chunks WHERE media_id > ?1
                 ORDER BY media_id LIMIT ?2",
            )?;
            let ids = st.query_map(rusqlite::params![after, limit], |r| r.get(0))?;
            ids.collect()
        })
        .await
    }

    /// One media's chunk rows, with when each was created.
    pub async fn chunk_rows(&self, media_id: MediaId) -> Result<Vec<(ChunkRow, i64)>, IndexError> {
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT chunk_index, size_bytes, crc32c, created_unix, write_id
                 FROM chunks WHERE media_id = ?1",
            )?;
            let rows = st.query_map([media_id], |r| {
                Ok((
                    ChunkRow {
                        chunk_index: r.get::<_, i64>(0)? as u64,
                        size_bytes: r.get::<_, i64>(1)? as u64,
                        crc32c: r.get::<_, i64>(2)? as u32,
                        write_id: r.get(4)?,
                    },
                    r.get(3)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Media count, chunk count and cached bytes.
    pub async fn totals(&self) -> Result<(u64, u64, u64), IndexError> {
        self.call(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM media), COUNT(*), COALESCE(SUM(size_bytes), 0)
                 FROM chunks",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
        })
        .await
    }

    /// Chunk rows, least recently read first: (media_id, chunk, size);
    /// those of pinned titles' media only, or only the others.
    pub async fn oldest_chunks(
        &self,
        limit: u32,
        offset: u32,
        pinned: bool,
    ) -> Result<Vec<(MediaId, u64, u64)>, IndexError> {
        self.call(move |c| {
            let sql = format!(
                "SELECT media_id, chunk_index, size_bytes FROM chunks
                 WHERE media_id {} IN ({})
                 ORDER BY last_access_unix, media_id, chunk_index LIMIT ?1 OFFSET ?2",
                if pinned { "" } else { "NOT" },
                super::titles::PINNED_MEDIA
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params![limit, offset], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Chunk rows of media last read before `before_unix` and not of a
    /// pinned title: (media_id, chunk, size), by media.
    pub async fn aged_chunks(
        &self,
        before_unix: i64,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<(MediaId, u64, u64)>, IndexError> {
        self.call(move |c| {
            let sql = format!(
                "SELECT c.media_id, c.chunk_index, c.size_bytes
                 FROM chunks c JOIN media m ON m.media_id = c.media_id
                 WHERE m.last_access_unix < ?1 AND c.media_id NOT IN ({})
                 ORDER BY c.media_id, c.chunk_index LIMIT ?2 OFFSET ?3",
                super::titles::PINNED_MEDIA
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params![before_unix, limit, offset], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Removes many chunk rows in one transaction.
    pub async fn remove_chunks(&self, chunks: Vec<(MediaId, u64)>) -> Result<(), IndexError> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "DELETE FROM chunks WHERE media_id = ?1 AND chunk_index = ?2",
                )?;
                for (m, i) in chunks {
                    st.execute(params![m, i as i64])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// Records that a media (and the given chunks) were read now.
    /// Marks many media and their chunks read at `unix`, in one
    /// transaction.
    pub async fn touch_many(
        &self,
        batch: Vec<(MediaId, Vec<u64>)>,
        served: Vec<(MediaId, u64, u64)>,
        unix: i64,
    ) -> Result<(), IndexError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut add = tx.prepare_cached(
                    "UPDATE media SET served_bytes = served_bytes + ?2, streams = streams + ?3
                     WHERE media_id = ?1",
                )?;
                for (id, bytes, streams) in served {
                    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    add.execute(params![id, n(bytes), n(streams)])?;
                }
                let mut media = tx.prepare_cached(
                    "UPDATE media SET last_access_unix = MAX(last_access_unix, ?2) WHERE media_id = ?1",
                )?;
                let mut chunk = tx.prepare_cached(
                    "UPDATE chunks SET last_access_unix = ?3
                     WHERE media_id = ?1 AND chunk_index = ?2",
                )?;
                for (id, chunks) in batch {
                    media.execute(params![id, unix])?;
                    for i in chunks {
                        chunk.execute(params![id, i as i64, unix])?;
                    }
                }
            }
            tx.commit()
        })
        .await
    }

    pub async fn touch(&self, media_id: MediaId, chunks: Vec<u64>) -> Result<(), IndexError> {
        self.call(move |c| {
            let now = unix_now();
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE media SET last_access_unix = ?2 WHERE media_id = ?1",
                params![media_id, now],
            )?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE chunks SET last_access_unix = ?3
                     WHERE media_id = ?1 AND chunk_index = ?2",
                )?;
                for idx in chunks {
                    st.execute(params![media_id, idx as i64, now])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept playlists stay within their count and their bytes, the least
    /// recently fetched going first.
    #[tokio::test]
    async fn kept_playlists_are_bounded() {
        let index = Index::open_in_memory().unwrap();
        let row = |n: i64, len: usize| PlaylistRow {
            url: format!("http://h/{n}.m3u8"),
            final_url: format!("http://h/{n}.m3u8"),
            content_type: None,
            body: vec![b'#'; len],
            fetched_unix: n,
            etag: Some(format!("\"{n}\"")),
            last_modified: None,
        };
        // 20 playlists of 4 MiB: only the newest 16 fit in 64 MiB.
        for n in 1..=20 {
            index.keep_playlist(row(n, 4 * 1024 * 1024)).await.unwrap();
        }
        assert!(index
            .kept_playlist("http://h/4.m3u8")
            .await
            .unwrap()
            .is_none());
        assert!(index
            .kept_playlist("http://h/5.m3u8")
            .await
            .unwrap()
            .is_some());
        let (count, bytes): (i64, i64) = index
            .call(|c| {
                c.query_row(
                    "SELECT COUNT(*), SUM(length(body)) FROM playlists",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!((count, bytes), (16, 64 * 1024 * 1024));
        // Replacing one keeps one row for its URL.
        index.keep_playlist(row(20, 10)).await.unwrap();
        let kept = index
            .kept_playlist("http://h/20.m3u8")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.body.len(), 10);
    }

    fn row(url: &str) -> MediaRow {
        MediaRow {
            content_type: Some("video/mp4".into()),
            etag: Some("\"a\"".into()),
            ..MediaRow::for_test(0, url, 10, 4)
        }
    }

    #[tokio::test]
    async fn media_versions_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.db")).unwrap();
        let (id1, old) = index.replace_media(row("http://a/x")).await.unwrap();
        assert_eq!(old, None);
        let got = index.media("http://a/x").await.unwrap().unwrap();
        assert_eq!(got.media_id, Some(id1));
        assert_eq!(got.size_bytes, 10);
        let chunk = ChunkRow::new(2, 2, u32::MAX);
        index.insert_chunk(id1, chunk).await.unwrap();
        assert_eq!(index.chunks(id1).await.unwrap(), vec![chunk]);
        index.touch(id1, vec![2]).await.unwrap();

        // A new version gets a new id and takes the old chunk rows away.
        let (id2, old) = index.replace_media(row("http://a/x")).await.unwrap();
        assert_eq!(old, Some(id1));
        assert_ne!(id1, id2);
        assert!(index.chunks(id1).await.unwrap().is_empty());
        // A late writer of the old version cannot record its chunk.
        assert!(index.insert_chunk(id1, chunk).await.is_err());

        let summary: (i64, i64) = index
            .call(|c| {
                c.query_row(
                    "SELECT cached_chunks, total_chunks FROM media_summary",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!(summary, (0, 3));
    }
}
