//! The index's history over real HTTP, read the way people read it: every
//! `sqlite3` recipe in README's "History" section runs with the real
//! `sqlite3` binary against a cache this test filled, and its figures are
//! checked against what the test did: files read cold and warm, an origin
//! failing, a chunk corrupted on disk and found by the background check,
//! `--max-cache-size` evicting after a restart.

mod common;

use std::path::Path;
use std::process::Command;

use common::origin::{Faults, Origin};
use common::{client, data, get, test_config, wait_idle, wait_until_cached, Spool};
use serde_json::Value;

const KIB: usize = 1024;

/// The sqlite3 command lines of README's "### History" section.
fn recipes() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("\n### History")
        .expect("README has a History section");
    let section = &readme[start + 1..];
    let end = section[4..].find("\n## ").map_or(section.len(), |e| e + 4);
    let section = &section[..end];
    let out: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("sqlite3 "))
        .map(str::to_owned)
        .collect();
    assert!(out.len() >= 4, "the History section's recipes: {out:?}");
    out
}

/// Runs `recipe` as a shell would, from a directory where `spool-cache` is
/// `cache_dir`; the output with `-json` in place of `-box`, parsed.
fn run(recipe: &str, cache_dir: &Path) -> Vec<Value> {
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(cache_dir, work.path().join("spool-cache")).unwrap();
    let sh = |line: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(work.path())
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // As written: it runs and prints something.
    assert!(!sh(recipe).trim().is_empty(), "{recipe} printed nothing");
    assert!(recipe.contains(" -box "), "recipes print boxes: {recipe}");
    let json = sh(&recipe.replacen(" -box ", " -json ", 1));
    if json.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Vec<Value>>(&json).unwrap()
}

fn int(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Bytes the index counts as cached.
fn cached_bytes(cache_dir: &Path) -> i64 {
    let c = rusqlite::Connection::open(cache_dir.join("index.db")).unwrap();
    c.query_row("SELECT COALESCE(SUM(size_bytes), 0) FROM chunks", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_recipe_shows_what_happened() {
    let origin = Origin::start().await;
    let a = data(200 * KIB, 1);
    let c_body = data(128 * KIB, 2);
    origin.add_file("a.mp4", a.clone(), "video/mp4");
    // A query that must never show: it stands for a credential.
    origin.add_file("c.mp4?token=secret", c_body.clone(), "video/mp4");
    origin.add_file("bad.mp4", data(1000, 3), "video/mp4");
    origin.set_faults(
        "bad.mp4",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    );
    let (a_url, c_url, bad_url) = (
        origin.url("a.mp4"),
        origin.url("c.mp4?token=secret"),
        origin.url("bad.mp4"),
    );
    let spool = Spool::start(&origin).await;
    let http = client();
    // Cold, then warm.
    assert_eq!(get(&http, &spool.url(&a_url), None).await.2, a);
    wait_until_cached(&spool.cache_dir, &a_url).await;
    wait_idle(&spool).await;
    assert_eq!(get(&http, &spool.url(&a_url), None).await.2, a);
    // An origin failing.
    assert_eq!(get(&http, &spool.url(&bad_url), None).await.0, 502);
    // A chunk corrupted on disk: set aside and fetched again.
    assert_eq!(get(&http, &spool.url(&c_url), None).await.2, c_body);
    common::wait_for("c cached whole", || async {
        common::cached_chunks(&spool.cache_dir, &c_url).len() == 2
    })
    .await;
    wait_idle(&spool).await;
    let index = rusqlite::Connection::open(spool.cache_dir.join("index.db")).unwrap();
    let c_id: i64 = index
        .query_row("SELECT media_id FROM media WHERE url = ?1", [&c_url], |r| {
            r.get(0)
        })
        .unwrap();
    drop(index);
    let chunk = spool.cache_dir.join(format!("chunks/{c_id}/0.chunk"));
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    // Written by this process, the chunk is trusted on read: the
    // background check finds it.
    spool.server.scrub().await;
    assert!(!chunk.exists(), "set aside");
    // Where each byte came from, as the metrics counted it: within a cold
    // read, a chunk already written is read from its file.
    let served = |source: &'static str| {
        let spool = &spool;
        async move {
            common::metric(
                spool,
                &format!("spool_served_bytes_total{{source=\"{source}\"}}"),
            )
            .await as i64
        }
    };
    let from_cache = served("cache").await;
    let from_memory = served("memory").await;
    let from_origin = served("download").await + served("passthrough").await;
    // What gathered reaches the index at shutdown at the latest.
    let (cache_dir, tmp) = spool.stop().await;

    // Again with a maximum size: the upkeep evicts down to 90% of it.
    let before = cached_bytes(&cache_dir);
    let mut cfg = test_config(&cache_dir, &origin);
    cfg.max_cache_size = 100 * KIB as u64;
    let spool = Spool::start_cfg(cfg).await;
    common::wait_for("the cache trimmed to its maximum", || async {
        cached_bytes(&cache_dir) <= 90 * KIB as i64
    })
    .await;
    let evicted = before - cached_bytes(&cache_dir);
    drop(spool.stop().await);

    let mut seen = 0;
    for recipe in recipes() {
        let rows = run(&recipe, &cache_dir);
        let text = serde_json::to_string(&rows).unwrap();
        assert!(
            !text.contains("secret"),
            "{recipe} shows a credential: {text}"
        );
        if recipe.contains("FROM daily_traffic") {
            // Requests count where their first byte came from: a and c
            // cold from the origin, a warm from the cache; the failing
            // origin sent no body.
            let sum = |k: &str| rows.iter().map(|r| int(r, k)).sum::<i64>();
            assert_eq!(sum("requests_origin"), 2, "{text}");
            assert_eq!(sum("requests_cache"), 1, "{text}");
            // Every byte sent, each where the metrics counted it; the warm
            // read at least from the cache.
            let total = sum("bytes_cache") + sum("bytes_memory") + sum("bytes_origin");
            assert_eq!(total, (2 * 200 * KIB + 128 * KIB) as i64, "{text}");
            assert_eq!(sum("bytes_cache"), from_cache, "{text}");
            assert_eq!(sum("bytes_memory"), from_memory, "{text}");
            assert_eq!(sum("bytes_origin"), from_origin, "{text}");
            assert!(from_cache >= (200 * KIB) as i64, "{text}");
            if rows.len() == 1 {
                let hit = 100.0 * (from_cache + from_memory) as f64 / total as f64;
                let shown = rows[0]["hit_percent"].as_f64().unwrap();
                assert!((shown - hit).abs() < 0.06, "{shown} vs {hit}");
            }
            seen |= 1;
        } else if recipe.contains("FROM top_media") {
            let first = &rows[0];
            assert_eq!(first["url"], a_url.as_str(), "{text}");
            assert_eq!(int(first, "watched_bytes"), (2 * 200 * KIB) as i64);
            assert_eq!(int(first, "streams"), 2);
            let c_shown = c_url.replace("token=secret", "REDACTED");
            let c = rows.iter().find(|r| r["url"] == c_shown.as_str());
            let c = c.unwrap_or_else(|| panic!("{c_shown} in {text}"));
            assert_eq!(int(c, "watched_bytes"), (128 * KIB) as i64);
            seen |= 2;
        } else if recipe.contains("FROM recent_problems") {
            let failed = rows.iter().find(|r| r["kind"] == "upstream_failure");
            let failed = failed.unwrap_or_else(|| panic!("an upstream failure in {text}"));
            assert_eq!(failed["reason"], "status 503");
            assert_eq!(failed["url"], bad_url.as_str());
            assert!(int(failed, "count") >= 1);
            let bad = rows.iter().find(|r| r["kind"] == "quarantine");
            let bad = bad.unwrap_or_else(|| panic!("a chunk set aside in {text}"));
            assert_eq!(bad["reason"], "checksum");
            assert!(bad["url"].as_str().unwrap().ends_with("c.mp4?REDACTED"));
            seen |= 4;
        } else if recipe.contains("FROM evictions") {
            assert!(!rows.is_empty(), "{recipe}");
            assert!(
                rows.iter().all(|r| r["reason"] == "max_cache_size"),
                "{text}"
            );
            let bytes: i64 = rows.iter().map(|r| int(r, "bytes")).sum();
            assert_eq!(bytes, evicted, "{text}");
            seen |= 8;
        }
    }
    assert_eq!(seen, 15, "a recipe for each view");
    // Both starts are in the history.
    let index = rusqlite::Connection::open(cache_dir.join("index.db")).unwrap();
    let starts: i64 = index
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'started'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(starts, 2);
    drop(tmp);
}
