//! The index's schema: the numbered SQL files of `migrations/`, applied in
//! order at open (`PRAGMA user_version` records the last one applied; an
//! index from a newer spool is refused, not rewritten), and the
//! connection's settings.

use rusqlite::Connection;

use super::IndexError;

/// Schema migrations, applied in order; `PRAGMA user_version` records the
/// last one applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_chunk_write_id.sql"),
    include_str!("../../migrations/0003_media_content_encoding.sql"),
    include_str!("../../migrations/0004_media_summary_redacted.sql"),
    include_str!("../../migrations/0005_playlists.sql"),
    include_str!("../../migrations/0006_titles.sql"),
    include_str!("../../migrations/0007_playlist_validators.sql"),
    include_str!("../../migrations/0008_history.sql"),
    include_str!("../../migrations/0009_fills.sql"),
    include_str!("../../migrations/0010_media_latest_url.sql"),
];

pub(super) fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    // WAL: readers (the sqlite3 CLI among them) never block the writer.
    // synchronous=NORMAL is durable across process crashes in WAL mode;
    // a power cut may lose the last commits, never corrupt the file.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), IndexError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::FromTheFuture {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::MediaId;
    use crate::store::Index;

    /// A version-1 index (no write ids) is brought up to date at open,
    /// its rows kept, each with a write id of its own.
    #[tokio::test]
    async fn version_one_index_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO media VALUES (7, 'http://a/x', 10, 4, NULL, NULL, NULL, 1, 0, 0);
                 INSERT INTO chunks VALUES (7, 0, 4, 99, 0, 0), (7, 1, 4, 98, 0, 0);",
            )
            .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let version: i64 = index
            .call(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let rows = index.chunks(MediaId(7)).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[0].write_id, rows[1].write_id);
    }

    #[test]
    fn schema_from_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        drop(Index::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Index::open(&path),
            Err(IndexError::FromTheFuture { found: 99, .. })
        ));
    }
}
