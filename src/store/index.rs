//! The SQLite index of media and cached chunks: the thread that owns its
//! connection. What is asked of it is in `queries.rs`, its rows in
//! `rows.rs`, its schema and migrations in `schema.rs`.
//!
//! SQLite calls block, so the connection lives on a thread of its own and
//! async code talks to it through a channel of closures (the shape of
//! tokio-rusqlite). One connection serialises all writes, which is what
//! SQLite wants anyway; WAL mode lets the `sqlite3` CLI read concurrently.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::IndexError;
use super::schema::{configure, migrate};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Cheap to clone handle to the index thread.
#[derive(Clone)]
pub(crate) struct Index {
    tx: std_mpsc::Sender<Job>,
    /// Write transactions committed (SQLite's commit hook).
    commits: Arc<AtomicU64>,
}

impl Index {
    /// Opens (creating if needed) the index at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        // A symlink in the index's place is refused, not followed.
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(IndexError::Corrupt(check));
        }
        Ok(Index::start(conn))
    }

    /// An index in memory, for a run whose cache directory is unusable.
    pub fn open_in_memory() -> Result<Index, IndexError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Index::start(conn))
    }

    fn start(mut conn: Connection) -> Index {
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        // Called for transactions that wrote; returning false lets the
        // commit go on.
        conn.commit_hook(Some(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            false
        }));
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("spool-index".into())
            .spawn(move || {
                for job in rx {
                    job(&mut conn);
                }
            })
            .expect("spawn index thread");
        Index { tx, commits }
    }

    /// Write transactions committed since the index was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` on the index thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, IndexError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| IndexError::Closed)?;
        Ok(rx.await.map_err(|_| IndexError::Closed)??)
    }
}

pub fn unix_now() -> i64 {
    crate::history::now_unix()
}
