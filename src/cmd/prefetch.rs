//! `spool prefetch <url>…`: warms media into a running spool's cache
//! through its admin API, with a progress bar (bytes, rate, ETA). A
//! playlist or manifest is a whole title: the renditions `--variant`
//! chooses, with their audio and subtitles, keys and initialization
//! sections, counted in files too.
//!
//! The work is the server's (`POST /api/prefetch`): it reads the chunks
//! not cached yet like a player would. Interrupted (Ctrl-C, SIGTERM, or
//! SIGHUP when its terminal closes), the server's job is stopped, the
//! command exits 130, and what arrived stays cached, so running it again
//! fetches only what is still missing. With `--detach` the jobs are
//! started and left to the server. Without a running spool it says so:
//! two processes writing one cache would not know each other's
//! downloads.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::remote::{reason, Answer, Api};
use crate::config::Remote;

/// How often progress is asked.
const POLL: Duration = Duration::from_millis(200);

/// The signals that stop a prefetch the command follows, listened for
/// from its start to its end (a listener made only while waiting for an
/// answer would miss a signal that comes between two polls, and once any
/// is made, the signal no longer ends the process by itself).
struct Stop {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Stop> {
        Ok(Stop {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when one of them arrives.
    async fn arrived(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Warms each URL in turn; returns whether every one ended cached whole.
/// With `detach`, starts every job and returns whether each was accepted.
pub async fn prefetch(
    urls: &[String],
    variant: &str,
    remote: &Remote,
    detach: bool,
) -> anyhow::Result<bool> {
    let api = Api::new(remote)?;
    let mut stop = Stop::new()?;
    let mut all = true;
    for url in urls {
        let outcome = match detach {
            true => start(&api, url, variant)
                .await?
                .map_or(Outcome::NotCached, |id| {
                    println!("{url}: job {id} started; it runs on in the server");
                    Outcome::Cached
                }),
            false => one(&api, url, variant, &mut stop).await?,
        };
        match outcome {
            Outcome::Cached => {}
            Outcome::NotCached => all = false,
            Outcome::Interrupted => {
                eprintln!("interrupted: what arrived stays cached; run again to fetch the rest");
                std::process::exit(130);
            }
        }
    }
    Ok(all)
}

enum Outcome {
    Cached,
    NotCached,
    Interrupted,
}

fn no_server(why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{why}. `spool prefetch` warms the cache of a running spool: start it first \
         (`spool`), or point --admin-listen / SPOOL_ADMIN_LISTEN (or --config) at its control plane"
    )
}

/// Asks the server to start a job; its id, or None when it refused (said
/// on stdout).
async fn start(api: &Api, url: &str, variant: &str) -> anyhow::Result<Option<u64>> {
    match api
        .post(
            "/api/prefetch",
            &serde_json::json!({ "url": url, "variant": variant }),
        )
        .await?
    {
        Answer::Nobody(why) => Err(no_server(&why)),
        Answer::Json(status, job) if status.is_success() => {
            Ok(Some(job.get("job").and_then(|j| j.as_u64()).unwrap_or(0)))
        }
        Answer::Json(status, json) => {
            println!("{url}: refused ({})", reason(status, &json));
            Ok(None)
        }
    }
}

async fn one(api: &Api, url: &str, variant: &str, stop: &mut Stop) -> anyhow::Result<Outcome> {
    let Some(id) = start(api, url, variant).await? else {
        return Ok(Outcome::NotCached);
    };
    let bar = ProgressBar::new(0).with_prefix(short(url));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:30} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .expect("a valid template")
        .progress_chars("#>-"),
    );
    let path = format!("/api/prefetch/{id}");
    // Follows the job until it ends; a stop signal meanwhile cancels it.
    let follow = async {
        let mut started = false;
        loop {
            let view = match api.get(&path).await? {
                Answer::Json(status, v) if status.is_success() => v,
                Answer::Json(status, json) => anyhow::bail!("{url}: {}", reason(status, &json)),
                Answer::Nobody(why) => anyhow::bail!("{url}: {why} any more"),
            };
            let n = |k: &str| view.get(k).and_then(|v| v.as_u64());
            if let (Some(total), false) = (n("total_bytes"), started) {
                // The bar's rate from what this job fetches, not from
                // what was cached before.
                bar.set_length(total);
                bar.set_position(n("cached_at_start_bytes").unwrap_or(0));
                bar.reset_eta();
                started = true;
            }
            if let Some(total) = n("total_bytes").filter(|_| n("files_total").is_some()) {
                // A title's size grows as its files are opened.
                bar.set_length(total);
            }
            bar.set_position(n("done_bytes").unwrap_or(0));
            // The server's ETA, from the rate of the last seconds.
            let eta = match n("eta_secs") {
                Some(s) => format!("ETA {}", humantime::format_duration(Duration::from_secs(s))),
                None => "ETA -".to_owned(),
            };
            bar.set_message(match (n("files_done"), n("files_total")) {
                (Some(d), Some(t)) => format!("{d}/{t} files, {eta}"),
                _ => eta,
            });
            let state = view.get("state").and_then(|s| s.as_str()).unwrap_or("");
            if !matches!(state, "starting" | "running") {
                bar.finish_and_clear();
                return Ok(view);
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let last = tokio::select! {
        last = follow => last?,
        _ = stop.arrived() => {
            bar.abandon();
            let _ = api.delete(&path).await;
            return Ok(Outcome::Interrupted);
        }
    };
    let n = |k: &str| last.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let state = last.get("state").and_then(|s| s.as_str()).unwrap_or("?");
    let secs = last
        .get("elapsed_secs")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let files = match (last.get("files_done"), last.get("files_total")) {
        (Some(d), Some(t)) if t.is_u64() => format!(" {d} of {t} files,"),
        _ => String::new(),
    };
    let mut line = format!(
        "{url}: {state},{files} {} of {} cached ({} fetched in {secs:.1}s, {}/s)",
        HumanBytes(n("done_bytes")),
        HumanBytes(n("total_bytes")),
        HumanBytes(n("fetched_bytes")),
        HumanBytes(n("rate_bytes_per_sec")),
    );
    if let Some(e) = last.get("error").and_then(|e| e.as_str()) {
        line += &format!(": {e}");
    }
    println!("{line}");
    Ok(if state == "done" {
        Outcome::Cached
    } else {
        Outcome::NotCached
    })
}

/// The end of a URL, for the bar's label.
fn short(url: &str) -> String {
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(url);
    let chars: Vec<char> = name.chars().collect();
    match chars.len() {
        0..=30 => name.to_owned(),
        n => format!("…{}", chars[n - 29..].iter().collect::<String>()),
    }
}
