//! Titles: what each fetched playlist or manifest names is recorded in
//! the index as one title (`store/titles.rs`), so the cache lists, pins
//! and prefetches titles rather than segments. A file no playlist names
//! is a title of one media.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};
use url::Url;

use super::admin::redacted;
use crate::manifest::{Kind, Outline};
use crate::store::summary::PageQuery;
use crate::store::titles::{self as rows, PartBudget, PartSummary, TitleRecord, TitleSummary};
use crate::store::{unix_now, Index, IndexError};
use crate::upstream::Upstream;

/// Most URLs whose title is remembered in memory (about 100 bytes each).
const MAX_MEMBERS: usize = 500_000;

/// The titles in the index, and the title of each URL the playlists
/// fetched by this process named (for logging a player's session as one
/// line). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Titles {
    index: Index,
    /// Whose cache keys name the parts, as they name media.
    upstream: Upstream,
    members: Arc<Mutex<HashMap<String, Member>>>,
    /// How many more parts the index keeps (`store/titles.rs`).
    budget: Arc<PartBudget>,
    /// Whether a playlist found no room for its parts before.
    said: Arc<AtomicBool>,
}

/// The title a URL belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub title_id: i64,
    /// The title's URL, redacted.
    pub title: Arc<str>,
}

impl Titles {
    pub fn new(index: Index, upstream: Upstream) -> Titles {
        Titles {
            index,
            upstream,
            members: Arc::default(),
            budget: Arc::default(),
            said: Arc::default(),
        }
    }

    /// The title `url` belongs to, as far as this process saw playlists
    /// name it.
    pub fn member(&self, url: &Url) -> Option<Member> {
        let key = self.key(url);
        self.members.lock().unwrap().get(&key).cloned()
    }

    /// What a title or part is known by: its cache key, as a media is
    /// (`--cache-key-ignore-query`: a segment's URL signed anew for each
    /// player is one part, and joins its media row).
    pub fn key(&self, url: &Url) -> String {
        match self.upstream.cache_key(url) {
            Some(key) => key.into(),
            None => url.as_str().to_owned(),
        }
    }

    /// Records what the playlist asked for as `url` (its redirects landed
    /// at `landed`) names. A failure to record is logged: playing never
    /// waits on it.
    pub async fn record(&self, url: &Url, landed: &Url, kind: Kind, body: &[u8]) {
        let Some(outline) = kind.outline(body, landed) else {
            return;
        };
        let Some(record) = record_of(url, kind, &outline, |u| self.key(u)) else {
            return;
        };
        let urls: Vec<String> = std::iter::once(record.url.clone())
            .chain(record.playlists.iter().cloned())
            .chain(record.files.iter().map(|f| f.0.clone()))
            .collect();
        let budget = self.budget.clone();
        let title = self
            .index
            .call(move |c| rows::record(c, &record, unix_now(), &budget))
            .await;
        match title {
            // Said once as a warning (a live title past its limit would
            // say it at every refresh), then in the debug log.
            Ok(None) => {
                let url = crate::upstream::redact(url);
                let why = "the index keeps no more titles' parts and none can be forgotten (all cached or pinned); this playlist's title is not recorded";
                match self.said.swap(true, Ordering::Relaxed) {
                    false => warn!(%url, "{why}"),
                    true => debug!(%url, "{why}"),
                }
            }
            Ok(Some((title_id, title_url, dropped))) => {
                if dropped > 0 {
                    let url = crate::upstream::redact(url);
                    let why = "the playlist names more than the index keeps of titles; the rest is not listed as part of its title";
                    match self.said.swap(true, Ordering::Relaxed) {
                        false => warn!(%url, dropped, "{why}"),
                        true => debug!(%url, dropped, "{why}"),
                    }
                }
                let member = Member {
                    title_id,
                    title: redacted(&title_url).into(),
                };
                let mut members = self.members.lock().unwrap();
                for u in urls {
                    if members.len() >= MAX_MEMBERS && !members.contains_key(&u) {
                        break;
                    }
                    members.insert(u, member.clone());
                }
            }
            Err(e) => {
                warn!(url = %crate::upstream::redact(url), error = %e, "cannot record the playlist's title")
            }
        }
    }

    /// Moves the titles and parts recorded under a URL that is not its
    /// cache key (before titles went by the key, or before the settings
    /// named one of its parameters) to the key; at start.
    pub async fn rekey(&self) {
        let upstream = self.upstream.clone();
        let key = move |u: &str| {
            let url = Url::parse(u).ok()?;
            upstream.cache_key(&url).map(String::from)
        };
        // A batch per call: other work of the index goes on between.
        let (mut from, mut moved) = (Some(crate::store::title_rekey::RekeyFrom::Parts(0)), 0);
        while let Some(f) = from {
            let (key, budget) = (key.clone(), self.budget.clone());
            match self
                .index
                .call(move |c| crate::store::title_rekey::rekey(c, key, &budget, f))
                .await
            {
                Ok((next, n)) => (from, moved) = (next, moved + n),
                Err(e) => return warn!(error = %e, "cannot move titles to their cache keys"),
            }
        }
        if moved > 0 {
            tracing::info!(moved, "titles and parts moved to their cache keys");
        }
    }

    /// Pins (or unpins) the title `url` belongs to; a file no playlist
    /// names becomes a title of its own. None: no title or media has
    /// that URL.
    pub async fn pin(&self, url: &Url, pinned: bool) -> Result<Option<i64>, IndexError> {
        let owned = self.key(url);
        let title = self
            .index
            .call(move |c| rows::set_pinned(c, &owned, pinned, unix_now()))
            .await?;
        if let Some(t) = title {
            tracing::info!(title = t, pinned, url = %redacted(url.as_str()), "title pin changed by an admin");
        }
        Ok(title)
    }

    /// Pins or unpins the title of media `id`; None: no such media.
    pub async fn pin_media(&self, id: i64, pinned: bool) -> Result<Option<i64>, IndexError> {
        let title = self
            .index
            .call(move |c| rows::set_pinned_media(c, id, pinned, unix_now()))
            .await?;
        if let Some(t) = title {
            tracing::info!(
                title = t,
                media = id,
                pinned,
                "title pin changed by an admin"
            );
        }
        Ok(title)
    }

    /// Pins or unpins title `id`; false when there is none.
    pub async fn pin_title(&self, id: i64, pinned: bool) -> Result<bool, IndexError> {
        let done = self
            .index
            .call(move |c| rows::pin_title(c, id, pinned))
            .await?;
        if done {
            tracing::info!(title = id, pinned, "title pin changed by an admin");
        }
        Ok(done)
    }

    /// A page of titles and lone files, and how many match.
    pub async fn page(&self, q: PageQuery) -> Result<(Vec<TitleSummary>, u64), IndexError> {
        self.index.call(move |c| rows::page(c, &q)).await
    }

    /// One title's row.
    pub async fn title(&self, id: i64) -> Result<Option<TitleSummary>, IndexError> {
        self.index.call(move |c| rows::title(c, id)).await
    }

    /// A title's parts.
    pub async fn parts(
        &self,
        id: i64,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<PartSummary>, IndexError> {
        self.index
            .call(move |c| rows::parts(c, id, offset, limit))
            .await
    }
}

/// What `outline` says of the title of the playlist at `url`, to record,
/// each URL by its `key`. None when it names nothing.
fn record_of(
    url: &Url,
    kind: Kind,
    outline: &Outline,
    key: impl Fn(&Url) -> String,
) -> Option<TitleRecord> {
    let kind = match kind {
        Kind::Hls(_) => "hls",
        Kind::Dash(_) => "dash",
        Kind::Other => return None,
    };
    if outline.file_count() == 0 && outline.streams.is_empty() {
        return None;
    }
    let me = key(url);
    let mut files: Vec<(String, &'static str, String)> = outline
        .files
        .iter()
        .map(|(u, role)| (key(u), role.as_str(), me.clone()))
        .collect();
    let mut playlists = Vec::new();
    for s in &outline.streams {
        match &s.playlist {
            Some(p) => playlists.push(key(p)),
            None => {
                let name = s.name().map_or_else(|| me.clone(), &key);
                files.extend(
                    s.files
                        .iter()
                        .map(|(u, role)| (key(u), role.as_str(), name.clone())),
                );
            }
        }
    }
    Some(TitleRecord {
        url: me,
        kind,
        duration_secs: outline.duration_secs,
        // A media playlist is a rendition itself.
        renditions: outline.streams.len().max(1) as u64,
        playlists,
        files,
    })
}
