//! Fill while watched (`--fill-while-watched`): once a player has read a
//! media for `--fill-after`, the rest is fetched in the background at
//! `--fill-rate`; an admin stops it (running or held back, or by
//! deleting its media), `--max-cache-size` holds it back, and it resumes
//! when there is room or after a restart. Over real HTTP, with a real index.

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{cached_chunks, cached_whole, client, data, wait_for, Spool};
use futures::StreamExt;
use serde_json::Value;

const CHUNK: u64 = 64 * 1024;
/// Each origin response at 1 MiB/s: a player's stream takes its time, as
/// on a real network, instead of landing in socket buffers at once.
const ORIGIN_RATE: u64 = 1024 * 1024;

fn fill_config(dir: &std::path::Path, origin: &Origin, rate: u64) -> spool::Config {
    let mut cfg = common::test_config(dir, origin);
    cfg.fill_while_watched = true;
    cfg.fill_after = Duration::from_millis(300);
    cfg.fill_rate = rate;
    cfg
}

async fn api(spool: &Spool, method: &str, path: &str) -> (u16, Value) {
    let c = client();
    let url = format!("{}{path}", spool.admin());
    let req = match method {
        "DELETE" => c.delete(&url),
        _ => c.get(&url),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The fill jobs the admin API lists.
async fn fills(spool: &Spool) -> Vec<Value> {
    let (status, v) = api(spool, "GET", "/api/prefetch").await;
    assert_eq!(status, 200, "{v}");
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["jobs"].as_array().cloned());
    list.unwrap_or_default()
        .into_iter()
        .filter(|j| j["kind"] == "fill")
        .collect()
}

/// The fills recorded in the index.
fn recorded(spool: &Spool) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        spool.cache_dir.join("index.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = conn.prepare("SELECT url FROM fills").unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// A player that plays `bytes=0-` at 2 Mbit/s for `secs`, then leaves;
/// the bytes it read.
async fn watch(url: &str, secs: f64) -> u64 {
    const PLAYBACK: f64 = 256.0 * 1024.0;
    let resp = client()
        .get(url)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let began = tokio::time::Instant::now();
    let until = began + Duration::from_secs_f64(secs);
    let mut got = 0;
    while tokio::time::Instant::now() < until {
        match body.next().await {
            Some(Ok(b)) => got += b.len() as u64,
            _ => break,
        }
        // Its buffer full: it waits for the playhead to reach what it has.
        let due = began + Duration::from_secs_f64(got as f64 / PLAYBACK);
        tokio::time::sleep_until(due.min(until)).await;
    }
    got
}

#[tokio::test]
async fn a_watched_media_is_filled_whole_at_its_rate() {
    let origin = Origin::start().await;
    let size = 40 * CHUNK as usize;
    let body = data(size, 5);
    origin.add_file("film.mkv", body.clone(), "video/x-matroska");
    origin.set_faults("film.mkv", Faults::throttled(ORIGIN_RATE));
    let rate = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::start_cfg(fill_config(dir.path(), &origin, rate)).await;
    let url = origin.url("film.mkv");

    watch(&spool.url(&url), 0.8).await;
    let left = tokio::time::Instant::now();
    let at_leave = origin.stats().body_bytes;
    wait_for("a fill job", || async { !fills(&spool).await.is_empty() }).await;
    assert_eq!(recorded(&spool), vec![url.clone()]);
    // Paced: what the origin sent after the player left is at most the
    // rate for the time since (and since shortly before, when the fill
    // began), plus one read-ahead window and a chunk.
    let slack = 256 * 1024 + 2 * CHUNK;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let secs = left.elapsed().as_secs_f64() + 0.5;
        let sent = origin.stats().body_bytes - at_leave;
        assert!(
            (sent as f64) <= rate as f64 * secs + slack as f64,
            "{sent} bytes in {secs:.1} s at {rate} B/s"
        );
    }
    wait_for("the media cached whole", || async {
        cached_whole(&spool.cache_dir, &url)
    })
    .await;
    wait_for("the fill done and forgotten", || async {
        fills(&spool).await.iter().all(|j| j["state"] == "done") && recorded(&spool).is_empty()
    })
    .await;
    // Whole, each byte once, and every byte right.
    assert!(origin.stats().body_bytes <= size as u64 + CHUNK);
    let (status, _, got) = common::get(&client(), &spool.url(&url), None).await;
    assert_eq!(status, 200);
    assert!(got == body);
}

#[tokio::test]
async fn off_by_default_and_not_for_a_short_look() {
    let origin = Origin::start().await;
    origin.add_file("a.mkv", data(20 * CHUNK as usize, 6), "video/x-matroska");
    origin.set_faults("a.mkv", Faults::throttled(ORIGIN_RATE));
    origin.add_file("b.mkv", data(20 * CHUNK as usize, 7), "video/x-matroska");
    origin.set_faults("b.mkv", Faults::throttled(ORIGIN_RATE));
    let spool = Spool::start(&origin).await;
    watch(&spool.url(&origin.url("a.mkv")), 0.8).await;
    let dir = tempfile::tempdir().unwrap();
    let filling = Spool::start_cfg(fill_config(dir.path(), &origin, 1 << 20)).await;
    // A look shorter than --fill-after.
    watch(&filling.url(&origin.url("b.mkv")), 0.1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fills(&spool).await.is_empty());
    assert!(fills(&filling).await.is_empty());
    assert!(!cached_whole(&spool.cache_dir, &origin.url("a.mkv")));
}

#[tokio::test]
async fn an_admin_stops_a_fill_and_what_it_fetched_stays() {
    let origin = Origin::start().await;
    origin.add_file(
        "long.mkv",
        data(200 * CHUNK as usize, 8),
        "video/x-matroska",
    );
    origin.set_faults("long.mkv", Faults::throttled(ORIGIN_RATE));
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::start_cfg(fill_config(dir.path(), &origin, 256 * 1024)).await;
    let url = origin.url("long.mkv");
    watch(&spool.url(&url), 0.8).await;
    wait_for("a running fill", || async {
        fills(&spool).await.iter().any(|j| j["state"] == "running")
    })
    .await;
    let job = fills(&spool).await[0]["job"].as_u64().unwrap();
    let (status, _) = api(&spool, "DELETE", &format!("/api/prefetch/{job}")).await;
    assert!(status < 300, "{status}");
    wait_for("the fill cancelled and forgotten", || async {
        fills(&spool).await[0]["state"] == "cancelled" && recorded(&spool).is_empty()
    })
    .await;
    let cached = cached_chunks(&spool.cache_dir, &url).len();
    assert!(cached > 0 && cached < 200, "{cached} chunks");
}

#[tokio::test]
async fn max_cache_size_holds_a_fill_back_and_it_stays_recorded() {
    let origin = Origin::start().await;
    origin.add_file("big.mkv", data(64 * CHUNK as usize, 9), "video/x-matroska");
    origin.set_faults("big.mkv", Faults::throttled(ORIGIN_RATE));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fill_config(dir.path(), &origin, 1 << 20);
    cfg.max_cache_size = 2 * 1024 * 1024;
    let spool = Spool::start_cfg(cfg).await;
    let url = origin.url("big.mkv");
    watch(&spool.url(&url), 0.8).await;
    held(&spool).await;
    let job = fills(&spool).await.remove(0);
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("max-cache-size"),
        "{job}"
    );
    assert_eq!(recorded(&spool), vec![url.clone()]);
    assert!(!cached_whole(&spool.cache_dir, &url));
}

/// Waits until a fill job is held back (state `stopped`).
async fn held(spool: &Spool) {
    wait_for("the fill held back", || async {
        fills(spool).await.iter().any(|j| j["state"] == "stopped")
    })
    .await;
}

/// Pauses or resumes cache writes through the admin API.
async fn caching(spool: &Spool, action: &str) {
    let r = client()
        .post(format!("{}/api/caching/{action}", spool.admin()))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{action}");
}

/// A fill held back (here: caching paused) goes on by itself once the
/// cache may take the rest, with no restart and no player.
#[tokio::test]
async fn a_held_fill_goes_on_when_there_is_room_again() {
    let origin = Origin::start().await;
    let size = 32 * CHUNK as usize;
    let body = data(size, 12);
    origin.add_file("show.mkv", body.clone(), "video/x-matroska");
    origin.set_faults("show.mkv", Faults::throttled(ORIGIN_RATE));
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::start_cfg(fill_config(dir.path(), &origin, 4 << 20)).await;
    let url = origin.url("show.mkv");
    caching(&spool, "pause").await;
    watch(&spool.url(&url), 0.8).await;
    held(&spool).await;
    let job = fills(&spool).await.remove(0);
    assert!(
        job["error"].as_str().unwrap_or("").contains("paused"),
        "{job}"
    );
    assert_eq!(recorded(&spool), vec![url.clone()]);
    // Still held while caching stays paused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        fills(&spool).await.iter().all(|j| j["state"] == "stopped"),
        "{:?}",
        fills(&spool).await
    );
    caching(&spool, "resume").await;
    wait_for("the media cached whole", || async {
        cached_whole(&spool.cache_dir, &url)
    })
    .await;
    wait_for("the fill done and forgotten", || async {
        fills(&spool).await.iter().any(|j| j["state"] == "done") && recorded(&spool).is_empty()
    })
    .await;
    let (status, _, got) = common::get(&client(), &spool.url(&url), None).await;
    assert_eq!(status, 200);
    assert!(got == body);
}

/// The origin's request count once no response is open and none came
/// for a second.
async fn quiet(origin: &Origin) -> u64 {
    loop {
        let before = origin.stats().requests;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if origin.open_bodies() == 0 && origin.stats().requests == before {
            return before;
        }
    }
}

/// A held fill that an admin cancels, or whose media an admin deletes,
/// ends for good: forgotten, and not started again when there is room.
#[tokio::test]
async fn a_held_fill_cancelled_or_its_media_deleted_stays_stopped() {
    for how in ["cancel the job", "delete the media"] {
        let origin = Origin::start().await;
        origin.add_file("ep.mkv", data(32 * CHUNK as usize, 13), "video/x-matroska");
        origin.set_faults("ep.mkv", Faults::throttled(ORIGIN_RATE));
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::start_cfg(fill_config(dir.path(), &origin, 4 << 20)).await;
        let url = origin.url("ep.mkv");
        caching(&spool, "pause").await;
        watch(&spool.url(&url), 0.8).await;
        held(&spool).await;
        let job = fills(&spool).await.remove(0);
        let (status, v) = match how {
            "cancel the job" => {
                api(&spool, "DELETE", &format!("/api/prefetch/{}", job["job"])).await
            }
            _ => api(&spool, "DELETE", &format!("/api/media/{}", job["media_id"])).await,
        };
        assert_eq!(status, 200, "{how}: {v}");
        if how == "delete the media" {
            assert_eq!(v["jobs_stopped"], 1, "{v}");
        }
        wait_for("the fill forgotten", || async {
            recorded(&spool).is_empty()
        })
        .await;
        let jobs = fills(&spool).await;
        assert!(
            jobs.len() == 1 && jobs[0]["state"] == "cancelled",
            "{how}: {jobs:?}"
        );
        // Twice: it had ended already.
        let again = api(&spool, "DELETE", &format!("/api/prefetch/{}", job["job"])).await;
        assert_eq!(again.0, 409, "{how}");
        // What was on the way when it was held ends (the read-ahead it
        // started); then room again, and past the first look (2 s):
        // nothing starts.
        let asked = quiet(&origin).await;
        caching(&spool, "resume").await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let jobs = fills(&spool).await;
        assert_eq!(jobs.len(), 1, "{how}: {jobs:?}");
        assert_eq!(origin.stats().requests, asked, "{how}");
        assert!(!cached_whole(&spool.cache_dir, &url), "{how}");
    }
}

/// After a restart, a player watching a media whose fill is held back
/// (resumed from the index, waiting for room) starts no second fill: one
/// job, and cancelling it ends the fill for good.
#[tokio::test]
async fn a_held_fill_stays_one_fill_after_a_restart() {
    let origin = Origin::start().await;
    origin.add_file("big.mkv", data(64 * CHUNK as usize, 14), "video/x-matroska");
    origin.set_faults("big.mkv", Faults::throttled(ORIGIN_RATE));
    let dir = tempfile::tempdir().unwrap();
    let cfg = |d: &std::path::Path| {
        let mut cfg = fill_config(d, &origin, 1 << 20);
        cfg.max_cache_size = 2 * 1024 * 1024;
        cfg
    };
    let spool = Spool::start_cfg(cfg(dir.path())).await;
    let url = origin.url("big.mkv");
    watch(&spool.url(&url), 0.8).await;
    held(&spool).await;
    let (cache_dir, _tmp) = spool.stop().await;
    let spool = Spool::start_cfg(cfg(&cache_dir)).await;
    held(&spool).await;
    // Long past --fill-after: the player asks for its fill.
    watch(&spool.url(&url), 0.8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = fills(&spool).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (status, v) = api(
        &spool,
        "DELETE",
        &format!("/api/prefetch/{}", jobs[0]["job"]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_for("the fill forgotten", || async {
        recorded(&spool).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_fill_goes_on_after_a_restart() {
    let origin = Origin::start().await;
    let size = 48 * CHUNK as usize;
    origin.add_file("series.mkv", data(size, 10), "video/x-matroska");
    origin.set_faults("series.mkv", Faults::throttled(ORIGIN_RATE));
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::start_cfg(fill_config(dir.path(), &origin, 128 * 1024)).await;
    let url = origin.url("series.mkv");
    watch(&spool.url(&url), 0.8).await;
    wait_for("a running fill", || async {
        fills(&spool).await.iter().any(|j| j["state"] == "running")
    })
    .await;
    let (cache_dir, _tmp) = spool.stop().await;
    assert!(!cached_whole(&cache_dir, &url), "filled before the restart");
    // No player this time: the recorded fill starts by itself.
    let spool = Spool::start_cfg(fill_config(&cache_dir, &origin, 4 << 20)).await;
    wait_for("the media cached whole", || async {
        cached_whole(&spool.cache_dir, &url)
    })
    .await;
    wait_for("the fill forgotten", || async {
        recorded(&spool).is_empty()
    })
    .await;
    let resumed = fills(&spool).await;
    assert_eq!(resumed.len(), 1, "{resumed:?}");
}

/// `fill_while_watched` in an `[[upstream]]` table wins over the flag, both
/// ways: on for that origin with the flag off, off with the flag on.
#[tokio::test]
async fn an_upstream_table_turns_fills_on_or_off() {
    let origin = Origin::start().await;
    origin.add_file("a.mkv", data(20 * CHUNK as usize, 10), "video/x-matroska");
    origin.set_faults("a.mkv", Faults::throttled(ORIGIN_RATE));
    let table = |on: bool| spool::config::UpstreamTable {
        origin: url::Url::parse(&origin.url("")).unwrap().origin(),
        headers: Default::default(),
        redirect_hosts: Vec::new(),
        cache_key_ignore_query: Default::default(),
        fill_while_watched: Some(on),
    };
    // The flag off, the table on: filled.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fill_config(dir.path(), &origin, 1 << 20);
    cfg.fill_while_watched = false;
    cfg.upstream_tables = vec![table(true)];
    let on = Spool::start_cfg(cfg).await;
    let url = origin.url("a.mkv");
    watch(&on.url(&url), 0.8).await;
    wait_for("the media filled whole", || async {
        cached_whole(&on.cache_dir, &url)
    })
    .await;
    assert_eq!(fills(&on).await.len(), 1);
    // The flag on, the table off: not filled.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fill_config(dir.path(), &origin, 1 << 20);
    cfg.upstream_tables = vec![table(false)];
    let off = Spool::start_cfg(cfg).await;
    watch(&off.url(&url), 0.8).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fills(&off).await.is_empty());
    assert!(!cached_whole(&off.cache_dir, &url));
}
