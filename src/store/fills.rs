//! The media being filled while watched (`migrations/0009_fills.sql`),
//! kept so that a fill goes on after a restart.

use rusqlite::params;

use super::error::IndexError;
use super::index::{unix_now, Index};

impl Index {
    /// Records a fill of the media at `url`.
    pub async fn add_fill(&self, url: &str) -> Result<(), IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.prepare_cached("INSERT OR IGNORE INTO fills (url, since_unix) VALUES (?1, ?2)")?
                .execute(params![url, unix_now()])?;
            Ok(())
        })
        .await
    }

    /// Forgets the fill of the media at `url`.
    pub async fn remove_fill(&self, url: &str) -> Result<(), IndexError> {
        let url = url.to_owned();
        self.call(move |c| {
            c.prepare_cached("DELETE FROM fills WHERE url = ?1")?
                .execute(params![url])?;
            Ok(())
        })
        .await
    }

    /// The fills recorded, oldest first.
    pub async fn fills(&self) -> Result<Vec<String>, IndexError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT url FROM fills ORDER BY since_unix, url")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fills_are_kept_until_removed() {
        let index = Index::open_in_memory().unwrap();
        index.add_fill("http://a/x.mkv").await.unwrap();
        index.add_fill("http://a/y.mkv").await.unwrap();
        index.add_fill("http://a/x.mkv").await.unwrap();
        let mut got = index.fills().await.unwrap();
        got.sort();
        assert_eq!(got, ["http://a/x.mkv", "http://a/y.mkv"]);
        index.remove_fill("http://a/x.mkv").await.unwrap();
        assert_eq!(index.fills().await.unwrap(), ["http://a/y.mkv"]);
    }
}
