//! Prefetch: warming a media, or a whole title, into the cache before
//! anyone plays it.
//!
//! A prefetch job reads the chunks of a media that are not cached yet,
//! stretch by stretch, the way a player would (`warm.rs`): the same
//! single flight, download runs, read-ahead and chunk writes, and the
//! bytes go nowhere. Chunks already cached are not read, so a job run
//! again after an interruption fetches only what is still missing. A
//! playlist or manifest is a title: its chosen renditions' playlists,
//! segments, keys and initialization sections are warmed, a few files at
//! a time, with progress in files and in bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::fill::FillPace;
use super::handle::Cache;
use super::media::Media;
use super::progress::{Files, Rolling};
use super::warm::{title_files, warm_media, WarmError};
use crate::manifest::Variant;
use crate::upstream::redact;

/// Prefetch jobs running at once at most (fills are not counted).
pub(crate) const MAX_PREFETCH_JOBS: usize = 4;

/// Finished jobs kept for their progress to be read.
const KEEP_FINISHED: usize = 32;

/// Files of a title warmed at once.
const FILES_AT_ONCE: usize = 3;

/// Prefetch jobs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Prefetches {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    /// Jobs running at once at most.
    max_running: usize,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    next_id: u64,
    /// Oldest first.
    list: VecDeque<Arc<Job>>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// Opening the media (asking the origin when it is new).
    Starting,
    Running,
    /// Every chunk is cached.
    Done,
    /// The transfer ended, but some chunks could not be written (caching
    /// paused, disk full).
    Incomplete,
    Failed,
    Cancelled,
    /// A fill held back: caching paused, the disk low, or
    /// `--max-cache-size` reached (it goes on once there is room, or after
    /// a restart: `filler.rs`).
    Stopped,
}

impl Phase {
    /// Its name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Incomplete => "incomplete",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::Stopped => "stopped",
        }
    }

    fn is_running(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running)
    }
}

pub(crate) struct Job {
    id: u64,
    url: Url,
    /// The renditions warmed when the URL is a title's playlist.
    variant: Variant,
    /// A fill while watched: paced, and held back when the cache may not
    /// grow.
    fill: Option<FillPace>,
    cancel: CancellationToken,
    started: Instant,
    /// Bytes of missing chunks that arrived during this job.
    fetched: AtomicU64,
    /// The fetched count now and then, for the rate of the last seconds.
    recent: Mutex<Rolling>,
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    media_id: Option<i64>,
    /// The media's size; for a title, the bytes of the files opened so
    /// far (and, until every file is, an estimate of the rest).
    total: Option<u64>,
    cached_at_start: u64,
    /// A title's files, once its playlists are read.
    files: Option<Files>,
    /// Cached bytes when it ended.
    cached_at_end: Option<u64>,
    error: Option<String>,
    /// How long it ran, once it ended.
    took: Option<Duration>,
    /// A fill held back that its filler starts again once the cache may
    /// take the rest (`filler.rs`): kept in the list meanwhile, and an
    /// admin's cancel ends it for good.
    waiting: bool,
}

/// A job's progress, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    pub job: u64,
    /// `prefetch` (asked for), or `fill` (a media being watched).
    pub kind: &'static str,
    pub url: String,
    pub state: Phase,
    /// For a title: the renditions chosen (`best`, `worst`, `all`, a
    /// bandwidth).
    pub variant: Option<String>,
    pub media_id: Option<i64>,
    /// For a title, the files (segments, keys, initialization sections)
    /// of the renditions chosen, and how many are cached whole or failed.
    pub files_total: Option<u64>,
    pub files_done: Option<u64>,
    pub files_failed: Option<u64>,
    /// For a title, an estimate until every file was opened.
    pub total_estimated: bool,
    pub total_bytes: Option<u64>,
    /// Bytes of the media that are cached, or arrived in this job.
    pub done_bytes: u64,
    pub cached_at_start_bytes: u64,
    pub fetched_bytes: u64,
    pub elapsed_secs: f64,
    /// The average since the job started.
    pub rate_bytes_per_sec: u64,
    /// The rate over the last 10 s, what `eta_secs` is reckoned from.
    pub recent_rate_bytes_per_sec: Option<u64>,
    /// Seconds until every byte is cached at the recent rate, while the
    /// job runs.
    pub eta_secs: Option<u64>,
    pub error: Option<String>,
}

impl Job {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    pub fn view(&self) -> JobView {
        let st = self.state.lock().unwrap();
        let fetched = self.fetched.load(Ordering::Relaxed);
        let elapsed = st.took.unwrap_or_else(|| self.started.elapsed());
        let secs = elapsed.as_secs_f64();
        let done = match st.cached_at_end {
            Some(c) => c,
            None => st.cached_at_start + fetched,
        };
        let recent = match st.phase.is_running() {
            true => self.recent.lock().unwrap().rate(Instant::now(), fetched),
            false => None,
        };
        let left = st.total.map(|t| t.saturating_sub(done));
        let eta = match (recent, left) {
            (_, Some(0)) => Some(0),
            (Some(r), Some(left)) if r > 0.0 => Some((left as f64 / r).ceil() as u64),
            _ => None,
        };
        JobView {
            job: self.id,
            kind: match self.fill {
                Some(_) => "fill",
                None => "prefetch",
            },
            url: redact(&self.url),
            state: st.phase,
            variant: st.files.map(|_| self.variant.to_string()),
            media_id: st.media_id,
            files_total: st.files.map(|f| f.total),
            files_done: st.files.map(|f| f.done),
            files_failed: st.files.map(|f| f.failed),
            total_estimated: st.files.is_some_and(|f| f.opened < f.total),
            total_bytes: st.total,
            done_bytes: st.total.map_or(done, |t| done.min(t)),
            cached_at_start_bytes: st.cached_at_start,
            fetched_bytes: fetched,
            elapsed_secs: (secs * 1000.0).round() / 1000.0,
            rate_bytes_per_sec: if secs > 0.0 {
                (fetched as f64 / secs) as u64
            } else {
                0
            },
            recent_rate_bytes_per_sec: recent.map(|r| r as u64),
            eta_secs: eta,
            error: st.error.clone(),
        }
    }

    /// Counts bytes that arrived for this job.
    fn arrived(&self, n: u64) {
        let fetched = self.fetched.fetch_add(n, Ordering::Relaxed) + n;
        self.recent.lock().unwrap().record(Instant::now(), fetched);
    }

    fn is_running(&self) -> bool {
        self.state.lock().unwrap().phase.is_running()
    }

    /// Ended, and not a fill waiting to go on.
    fn is_over(&self) -> bool {
        let st = self.state.lock().unwrap();
        !st.phase.is_running() && !st.waiting
    }

    /// Ends a held fill's wait, to start it again; false when an admin
    /// cancelled it meanwhile.
    pub fn end_wait(&self) -> bool {
        std::mem::take(&mut self.state.lock().unwrap().waiting)
    }

    /// Resolves once an admin cancelled it (running, or a held fill).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn phase(&self) -> Phase {
        self.state.lock().unwrap().phase
    }
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("{0} prefetch jobs are running already; wait for one to end")]
    Busy(usize),
}

impl Prefetches {
    pub fn new(cache: Cache, max_running: usize) -> Prefetches {
        Prefetches {
            inner: Arc::new(Inner {
                cache,
                max_running: max_running.max(1),
                jobs: Mutex::default(),
            }),
        }
    }

    /// Starts warming `url` (checked against the allowlist by the caller;
    /// for a title, the renditions `variant` chooses), or returns the job
    /// already warming it (false: not new).
    pub fn start(&self, url: Url, variant: Variant) -> Result<(Arc<Job>, bool), Refused> {
        self.start_job(url, variant, None)
    }

    /// Starts filling the media at `url` at `pace` (`fill.rs`), or returns
    /// the job already warming it (false: not new).
    pub fn start_fill(&self, url: Url, pace: FillPace) -> (Arc<Job>, bool) {
        self.start_job(url, Variant::Best, Some(pace))
            .expect("fills are not counted")
    }

    fn start_job(
        &self,
        url: Url,
        variant: Variant,
        fill: Option<FillPace>,
    ) -> Result<(Arc<Job>, bool), Refused> {
        let mut jobs = self.inner.jobs.lock().unwrap();
        // A fill held back and waiting to go on is still the media's fill
        // (a player asking again after a restart starts no second one).
        let waiting = |j: &&Arc<Job>| j.fill.is_some() && j.state.lock().unwrap().waiting;
        if fill.is_some() {
            if let Some(j) = jobs.list.iter().filter(waiting).find(|j| j.url == url) {
                return Ok((j.clone(), false));
            }
        }
        let running: Vec<&Arc<Job>> = jobs.list.iter().filter(|j| j.is_running()).collect();
        if let Some(j) = running
            .iter()
            .find(|j| j.url == url && j.variant == variant)
        {
            return Ok(((*j).clone(), false));
        }
        let prefetching = running.iter().filter(|j| j.fill.is_none()).count();
        if fill.is_none() && prefetching >= self.inner.max_running {
            return Err(Refused::Busy(prefetching));
        }
        jobs.next_id += 1;
        let job = Arc::new(Job {
            id: jobs.next_id,
            url,
            variant,
            fill,
            cancel: CancellationToken::new(),
            started: Instant::now(),
            fetched: AtomicU64::new(0),
            recent: Mutex::default(),
            state: Mutex::new(State {
                phase: Phase::Starting,
                media_id: None,
                total: None,
                cached_at_start: 0,
                files: None,
                cached_at_end: None,
                error: None,
                took: None,
                waiting: false,
            }),
        });
        jobs.list.push_back(job.clone());
        // Finished jobs beyond the few kept go, oldest first.
        while jobs.list.iter().filter(|j| j.is_over()).count() > KEEP_FINISHED {
            let Some(at) = jobs.list.iter().position(|j| j.is_over()) else {
                break;
            };
            jobs.list.remove(at);
        }
        let tasks = self.inner.cache.tasks().clone();
        tasks.spawn(run(self.inner.cache.clone(), job.clone()));
        Ok((job, true))
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        let jobs = self.inner.jobs.lock().unwrap();
        jobs.list.iter().find(|j| j.id == id).cloned()
    }

    /// Every job kept, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        let jobs = self.inner.jobs.lock().unwrap();
        jobs.list.iter().map(|j| j.view()).collect()
    }

    /// Stops a running job, or a held fill for good; what it fetched
    /// stays cached. Returns false when it had ended already.
    pub fn cancel(&self, job: &Job) -> bool {
        let stopped = {
            let mut st = job.state.lock().unwrap();
            let waiting = std::mem::take(&mut st.waiting);
            if waiting {
                st.phase = Phase::Cancelled;
            }
            waiting || st.phase.is_running()
        };
        job.cancel.cancel();
        stopped
    }

    /// Stops the jobs of media `id`, whose URL is `key` (running, fills
    /// held back, and those still opening a URL of that key), when an
    /// admin deleted its cache; how many.
    pub fn cancel_media(&self, id: i64, key: &str) -> usize {
        let titles = self.inner.cache.titles();
        let jobs: Vec<Arc<Job>> = {
            let jobs = self.inner.jobs.lock().unwrap();
            let of = |j: &&Arc<Job>| match j.state.lock().unwrap().media_id {
                Some(m) => m == id,
                None => titles.key(&j.url) == key,
            };
            jobs.list.iter().filter(of).cloned().collect()
        };
        jobs.iter().filter(|j| self.cancel(j)).count()
    }
}

/// Why a job ended early.
enum Stop {
    Cancelled,
    Failed(String),
    Held(&'static str),
}

async fn run(cache: Cache, job: Arc<Job>) {
    let ended = tokio::select! {
        r = warm(&cache, &job) => r,
        _ = job.cancel.cancelled() => Err(Stop::Cancelled),
    };
    let took = job.started.elapsed();
    job.set(|st| {
        st.took = Some(took);
        match ended {
            Ok(phase) => st.phase = phase,
            Err(Stop::Cancelled) => st.phase = Phase::Cancelled,
            Err(Stop::Failed(why)) => {
                st.phase = Phase::Failed;
                st.error = Some(why);
            }
            Err(Stop::Held(why)) => {
                st.phase = Phase::Stopped;
                st.error = Some(format!("stopped: {why}"));
            }
        }
        // A fill that did not end for good goes on later.
        st.waiting = job.fill.is_some() && matches!(st.phase, Phase::Stopped | Phase::Incomplete);
    });
    let v = job.view();
    tracing::info!(job = v.job, url = %v.url, state = %v.state.as_str(), fetched = v.fetched_bytes, "prefetch ended");
}

async fn warm(cache: &Cache, job: &Job) -> Result<Phase, Stop> {
    let named = crate::manifest::named(&job.url);
    if named {
        match title_files(cache, &job.url, job.variant).await {
            Ok(Some(files)) => return warm_title(cache, job, files).await,
            Ok(None) => {} // named like one, but a media
            Err(why) => return Err(Stop::Failed(why)),
        }
    }
    let opened = |media: &Media, missing: u64| {
        job.set(|st| {
            st.phase = Phase::Running;
            st.media_id = media.id().map(|i| i.0);
            st.total = Some(media.size());
            st.cached_at_start = media.size() - missing;
        })
    };
    let arrived = |n: u64| job.arrived(n);
    let warmed = warm_media(cache, &job.url, &opened, &arrived, job.fill.as_ref())
        .await
        .map_err(|e| match e {
            WarmError::Failed(why) => Stop::Failed(why),
            WarmError::Held(why) => Stop::Held(why),
        })?;
    job.set(|st| st.cached_at_end = Some(warmed.cached_at_end));
    Ok(if warmed.cached_at_end == warmed.size {
        Phase::Done
    } else {
        Phase::Incomplete
    })
}

/// Warms a title's files, a few at a time. A file that fails does not
/// stop the others: the job ends incomplete, with the first reason (and
/// failed when none could be warmed).
async fn warm_title(cache: &Cache, job: &Job, files: Vec<Url>) -> Result<Phase, Stop> {
    let total = files.len() as u64;
    job.set(|st| {
        st.phase = Phase::Running;
        st.files = Some(Files {
            total,
            ..Files::default()
        });
        st.total = Some(0);
    });
    let opened = |media: &Media, missing: u64| {
        job.set(|st| {
            let f = st.files.get_or_insert_with(Files::default);
            f.opened += 1;
            f.known_bytes += media.size();
            st.total = Some(f.total_bytes());
            st.cached_at_start += media.size() - missing;
        })
    };
    let arrived = |n: u64| job.arrived(n);
    let mut cached = 0u64;
    let mut first_error: Option<String> = None;
    let mut each = futures::stream::iter(files)
        .map(|u| {
            let (opened, arrived) = (&opened, &arrived);
            async move { (warm_media(cache, &u, opened, arrived, None).await, u) }
        })
        .buffer_unordered(FILES_AT_ONCE);
    while let Some((result, url)) = each.next().await {
        match result {
            Ok(w) => {
                cached += w.cached_at_end;
                job.set(|st| {
                    let f = st.files.get_or_insert_with(Files::default);
                    f.done += u64::from(w.cached_at_end == w.size);
                })
            }
            Err(why) => {
                tracing::debug!(job = job.id, url = %redact(&url), error = %why, "a file of the title could not be warmed");
                first_error.get_or_insert_with(|| format!("{}: {why}", redact(&url)));
                job.set(|st| st.files.get_or_insert_with(Files::default).failed += 1);
            }
        }
    }
    let (done, failed) = {
        let st = job.state.lock().unwrap();
        let f = st.files.unwrap_or_default();
        (f.done, f.failed)
    };
    job.set(|st| {
        st.cached_at_end = Some(cached);
        st.total = st.files.map(|f| f.known_bytes);
        if failed > 0 {
            st.error =
                first_error.map(|e| format!("{failed} of {total} files failed; the first: {e}"));
        }
    });
    Ok(if total > 0 && failed == total {
        Phase::Failed
    } else if done == total {
        Phase::Done
    } else {
        Phase::Incomplete
    })
}
