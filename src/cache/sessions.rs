//! Player sessions of a title: the streams one client reads of one title
//! (its playlists' segments, keys, init sections) are summed and logged
//! as one line once the client has read nothing of it for a while, not a
//! line per segment. Streams of files no playlist named are logged one
//! line each, as before (`body.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;
use url::Url;

use super::titles::Titles;

/// A session ends when its client read nothing of the title this long.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(30);

/// Most sessions followed at once (one per client and title).
const MAX_SESSIONS: usize = 10_000;

/// What one stream sent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    pub cache: u64,
    pub origin: u64,
    pub framing: u64,
}

/// Sessions under way. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Sessions {
    titles: Titles,
    open: Arc<Mutex<HashMap<(IpAddr, i64), Session>>>,
}

#[derive(Debug)]
struct Session {
    title: Arc<str>,
    began: Instant,
    last: Instant,
    streams: u64,
    sent: Sent,
    /// Streams cut by a failure.
    cut: u64,
}

impl Sessions {
    pub fn new(titles: Titles) -> Sessions {
        Sessions {
            titles,
            open: Arc::default(),
        }
    }

    /// Counts a stream of `url` that `client` read in its title's session;
    /// false when `url` belongs to no title this process knows (or there
    /// is no client): the caller logs the stream itself.
    pub fn stream_ended(&self, client: Option<IpAddr>, url: &Url, sent: Sent, cut: bool) -> bool {
        let (Some(client), Some(member)) = (client, self.titles.member(url)) else {
            return false;
        };
        let now = Instant::now();
        let mut open = self.open.lock().unwrap();
        if open.len() >= MAX_SESSIONS && !open.contains_key(&(client, member.title_id)) {
            return false;
        }
        let s = open
            .entry((client, member.title_id))
            .or_insert_with(|| Session {
                title: member.title.clone(),
                began: now,
                last: now,
                streams: 0,
                sent: Sent::default(),
                cut: 0,
            });
        s.last = now;
        s.streams += 1;
        s.sent.cache += sent.cache;
        s.sent.origin += sent.origin;
        s.sent.framing += sent.framing;
        s.cut += u64::from(cut);
        true
    }

    /// Logs and forgets the sessions idle for `SESSION_IDLE` (all of them
    /// with `all`, at shutdown).
    pub fn sweep(&self, all: bool) {
        let now = Instant::now();
        let ended: Vec<((IpAddr, i64), Session)> = {
            let mut open = self.open.lock().unwrap();
            let keys: Vec<(IpAddr, i64)> = open
                .iter()
                .filter(|(_, s)| all || now.saturating_duration_since(s.last) >= SESSION_IDLE)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| open.remove(&k).map(|s| (k, s)))
                .collect()
        };
        for ((client, title_id), s) in ended {
            info!(
                title = title_id,
                url = %s.title,
                client = %client,
                streams = s.streams,
                bytes = s.sent.cache + s.sent.origin + s.sent.framing,
                from_cache = s.sent.cache,
                from_origin = s.sent.origin,
                cut = s.cut,
                secs = s.last.saturating_duration_since(s.began).as_secs(),
                "title session"
            );
        }
    }

    /// Sweeps every few seconds, forever.
    pub async fn sweep_loop(self) {
        loop {
            tokio::time::sleep(SESSION_IDLE / 6).await;
            self.sweep(false);
        }
    }
}
