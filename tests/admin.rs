//! The admin API over real HTTP (an in-process spool, the in-tree origin on
//! loopback), and `spool ls` / `spool prefetch` as the real binary.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::origin::{Faults, Origin};
use common::{cached_chunks, cached_whole, client, data, get, wait_for, wait_until_cached, Spool};
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-for-tests-0123";

/// One API call: status and JSON body (`Value::Null` when not JSON).
async fn call(
    c: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> (u16, Value) {
    let mut req = c.request(method.parse().unwrap(), url);
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let r = req.send().await.expect("an answer");
    let status = r.status().as_u16();
    let v = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, v)
}

async fn api_get(spool: &Spool, path: &str) -> (u16, Value) {
    call(
        &client(),
        "GET",
        &format!("{}{path}", spool.admin()),
        None,
        None,
    )
    .await
}

async fn api_post(spool: &Spool, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    let url = format!("{}{path}", spool.admin());
    call(
        &client(),
        "POST",
        &url,
        Some(&text),
        Some("application/json"),
    )
    .await
}

/// The media id the index gave an origin URL, from `GET /api/media`.
async fn media_id(spool: &Spool, origin_url: &str) -> i64 {
    let (status, v) = api_get(spool, "/api/media").await;
    assert_eq!(status, 200, "{v}");
    let path = url::Url::parse(origin_url).unwrap().path().to_owned();
    v["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"].as_str().unwrap().ends_with(&path))
        .unwrap_or_else(|| panic!("{origin_url} not listed: {v}"))["id"]
        .as_i64()
        .unwrap()
}

/// Chunk files left under `chunks/<id>/`.
fn chunk_files(cache_dir: &Path, id: i64) -> usize {
    std::fs::read_dir(cache_dir.join("chunks").join(id.to_string()))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".chunk"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn status_media_and_chunk_maps() {
    let origin = Origin::start().await;
    let body = data(10 * 64 * 1024 + 100, 1); // 11 chunks of 64 KiB
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = origin.url("a.mp4");
    // The first 3 chunks only.
    let (status, _, got) = get(&client(), &spool.url(&url), Some("bytes=0-196607")).await;
    assert_eq!((status, got.len()), (206, 196_608));
    wait_for("3 chunks cached", || async {
        cached_chunks(&spool.cache_dir, &url) == vec![0, 1, 2]
    })
    .await;
    let id = media_id(&spool, &url).await;
    let (status, m) = api_get(&spool, &format!("/api/media/{id}")).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["size_bytes"], json!(body.len()));
    assert_eq!(
        (m["cached_chunks"].clone(), m["total_chunks"].clone()),
        (json!(3), json!(11))
    );
    assert_eq!(m["cached_bytes"], json!(196_608));
    assert_eq!(m["runs"], json!([["cached", 3], ["missing", 8]]));
    assert_eq!(m["content_type"], json!("video/mp4"));

    let (status, list) = api_get(&spool, "/api/media").await;
    assert_eq!(status, 200);
    let listed = &list["media"][0];
    assert_eq!(
        (listed["id"].as_i64(), listed["cached_chunks"].as_u64()),
        (Some(id), Some(3))
    );
    assert!(listed["last_access_unix"].as_i64().unwrap() > 0);

    // A query is redacted wherever the URL is shown.
    origin.add_file("q.mp4", data(1000, 2), "video/mp4");
    let secret = format!("{}?api_key=hush-1234", origin.url("q.mp4"));
    assert_eq!(get(&client(), &spool.url(&secret), None).await.0, 200);
    let (_, list) = api_get(&spool, "/api/media").await;
    assert!(!list.to_string().contains("hush-1234"), "{list}");
    assert!(list.to_string().contains("q.mp4?REDACTED"), "{list}");

    let (status, s) = api_get(&spool, "/api/status").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["caching"]["state"], json!("writing"));
    assert_eq!(s["caching"]["writing"], json!(true));
    assert!(s["cache"]["bytes"].as_u64().unwrap() >= 196_608, "{s}");
    assert!(s["disk"]["level"].is_string(), "{s}");
    assert!(s["disk"]["free_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["streams"], json!([]), "nobody reads now");
}

/// Every malformed request gets a 4xx with a JSON reason, never a panic
/// or a 5xx.
#[tokio::test]
async fn bad_input_gets_clear_4xx() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let c = client();
    let at = |p: &str| format!("{}{p}", spool.admin());
    let json_ct = Some("application/json");
    // method, path, body, Content-Type, status, what the reason says
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<String>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/api/media/abc", None, None, 400, "positive integer"),
        ("GET", "/api/media/0", None, None, 400, "positive integer"),
        ("GET", "/api/media/-3", None, None, 400, "positive integer"),
        (
            "GET",
            "/api/media/99999999999999999999999",
            None,
            None,
            400,
            "positive integer",
        ),
        ("GET", "/api/media/424242", None, None, 404, "no media"),
        ("DELETE", "/api/media/424242", None, None, 404, "no media"),
        ("PUT", "/api/media/1", None, None, 405, "GET, DELETE"),
        ("POST", "/api/media", Some("{}".into()), json_ct, 405, "GET"),
        ("GET", "/api/nothing-here", None, None, 404, "no such"),
        (
            "GET",
            "/api/prefetch/77",
            None,
            None,
            404,
            "no prefetch job",
        ),
        (
            "GET",
            "/api/prefetch/x",
            None,
            None,
            400,
            "positive integer",
        ),
        ("GET", "/api/caching/pause", None, None, 405, "POST"),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "http://x/y"}"#.into()),
            None,
            415,
            "application/json",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "http://x/y"}"#.into()),
            Some("text/plain"),
            415,
            "application/json",
        ),
        (
            "POST",
            "/api/caching/pause",
            None,
            Some("application/x-www-form-urlencoded"),
            415,
            "application/json",
        ),
        (
            "POST",
            "/api/prefetch",
            Some("{not json".into()),
            json_ct,
            400,
            "send {",
        ),
        (
            "POST",
            "/api/prefetch",
            Some("{}".into()),
            json_ct,
            400,
            "url",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": 5}"#.into()),
            json_ct,
            400,
            "send {",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "http://x/y", "extra": 1}"#.into()),
            json_ct,
            400,
            "extra",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "ftp://x/y"}"#.into()),
            json_ct,
            400,
            "url",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "not a url"}"#.into()),
            json_ct,
            400,
            "url",
        ),
        // A private address not in --allow-upstream: refused like /stream.
        (
            "POST",
            "/api/prefetch",
            Some(r#"{"url": "http://10.1.2.3/movie.mp4"}"#.into()),
            json_ct,
            403,
            "not allowed",
        ),
        (
            "POST",
            "/api/prefetch",
            Some(format!(r#"{{"url": "http://x/{}"}}"#, "a".repeat(20_000))),
            json_ct,
            413,
            "larger than",
        ),
    ];
    for (method, path, body, ctype, want, says) in cases {
        let (status, v) = call(&c, method, &at(path), body.as_deref(), ctype).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        let reason = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no JSON error: {v}"));
        assert!(
            reason.contains(says),
            "{method} {path}: {reason:?} does not say {says:?}"
        );
    }
}

/// Listening beyond loopback with a token: the API answers only with the
/// token (loopback clients included); the page itself holds no data.
#[tokio::test]
async fn the_api_needs_the_token_when_restricted() {
    let origin = Origin::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.admin_token = Some(TOKEN.into());
    let media = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], listener.local_addr().unwrap().port()));
    let server = spool::Server::new(cfg).await.unwrap();
    let listeners = spool::Listeners {
        media,
        admin: Some(listener),
    };
    let task = tokio::spawn(server.serve_on(listeners, std::future::pending()));
    let c = client();
    let at = |p: &str| format!("http://{addr}{p}");
    wait_for("spool to answer", || async {
        c.get(at("/health/live")).send().await.is_ok()
    })
    .await;
    for (method, path) in [
        ("GET", "/api/status"),
        ("GET", "/api/media"),
        ("GET", "/api/media/1"),
        ("DELETE", "/api/media/1"),
        ("GET", "/api/prefetch"),
        ("POST", "/api/caching/pause"),
    ] {
        let r = c
            .request(method.parse().unwrap(), at(path))
            .header("content-type", "application/json")
            .header("authorization", "Bearer not-the-token-at-all")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        assert!(r.headers().contains_key("www-authenticate"));
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(v["error"].as_str().unwrap().contains("SPOOL_ADMIN_TOKEN"));
    }
    // Nothing was paused by the refused request.
    let r = c
        .get(at("/api/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["caching"]["state"], json!("writing"));
    // The page: HTML, no data in it, only its own scripts.
    let r = c.get(at("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("connect-src 'self'"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("fetch(\"api/\"") && page.contains("Bearer"),
        "the page asks the API with the token"
    );
    task.abort();
}

/// Deleting a media while a player streams it: the stream finishes with
/// every byte right, the rows and files are gone afterwards, and the
/// next player starts afresh.
#[tokio::test]
async fn delete_while_a_stream_reads() {
    let origin = Origin::start().await;
    let body = data(16 * 64 * 1024, 3);
    origin.add_file("d.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = origin.url("d.mp4");
    let c = client();
    // The first half cached.
    let (status, _, _) = get(&c, &spool.url(&url), Some("bytes=0-524287")).await;
    assert_eq!(status, 206);
    wait_for("the first half cached", || async {
        cached_chunks(&spool.cache_dir, &url).len() == 8
    })
    .await;
    let id = media_id(&spool, &url).await;
    assert_eq!(chunk_files(&spool.cache_dir, id), 8);
    // A slow origin, so the stream is still running when the cache goes.
    origin.set_faults("d.mp4", Faults::throttled(400_000));
    let mut resp = c.get(spool.url(&url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    while got.len() < 64 * 1024 {
        got.extend_from_slice(&resp.chunk().await.unwrap().expect("more bytes"));
    }
    let (status, v) = call(
        &c,
        "DELETE",
        &format!("{}/api/media/{id}", spool.admin()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["deleted"]["chunks"], json!(8));
    assert_eq!(v["deleted"]["bytes"], json!(524_288));
    while let Some(piece) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&piece);
    }
    assert_eq!(got.len(), body.len(), "the stream finished");
    assert!(got == body, "every byte right");
    // Gone from the index and the disk, late writes of the stream included.
    let (status, _) = api_get(&spool, &format!("/api/media/{id}")).await;
    assert_eq!(status, 404);
    assert!(cached_chunks(&spool.cache_dir, &url).is_empty());
    // A write of the stream's last chunk may still be under way: it fails
    // the foreign key of the deleted version and removes its file.
    wait_for("late writes of the deleted version gone", || async {
        chunk_files(&spool.cache_dir, id) == 0
    })
    .await;
    // The history says an admin took it (the `evictions` view).
    wait_for("the deletion in the history", || async {
        let conn = rusqlite::Connection::open_with_flags(
            spool.cache_dir.join("index.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT chunks, bytes FROM evictions WHERE reason = 'admin' AND media_id = ?1",
            [id],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .is_ok_and(|got| got == (8, 524_288))
    })
    .await;
    // The next player gets a new version, cached again.
    origin.clear_faults("d.mp4");
    let (status, _, again) = get(&c, &spool.url(&url), None).await;
    assert_eq!((status, again == body), (200, true));
    wait_until_cached(&spool.cache_dir, &url).await;
    assert_ne!(media_id(&spool, &url).await, id);
}

/// Polls a prefetch job until it ends; returns every progress seen and
/// the last.
async fn follow(spool: &Spool, job: u64) -> (Vec<Value>, Value) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + common::WAIT_LIMIT;
    loop {
        let (status, v) = api_get(spool, &format!("/api/prefetch/{job}")).await;
        assert_eq!(status, 200, "{v}");
        seen.push(v.clone());
        if v["state"] != json!("running") && v["state"] != json!("starting") {
            return (seen, v);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prefetch job did not end: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn prefetch_fills_the_cache_with_progress_and_a_rerun_fetches_nothing() {
    let origin = Origin::start().await;
    let body = data(20 * 64 * 1024, 4);
    origin.add_file("p.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = origin.url("p.mp4");
    // Slow enough for progress to be seen between start and end.
    origin.set_faults("p.mp4", Faults::throttled(1_000_000));
    let (status, job) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 202, "{job}");
    let id = job["job"].as_u64().unwrap();
    // Asking again while it runs gives the same job.
    let (status, same) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!((status, same["job"].as_u64()), (200, Some(id)));
    let (seen, last) = follow(&spool, id).await;
    let total = body.len() as u64;
    assert_eq!(last["state"], json!("done"), "{last}");
    assert_eq!(last["total_bytes"], json!(total));
    assert_eq!(last["done_bytes"], json!(total));
    assert_eq!(last["fetched_bytes"], json!(total));
    assert!(last["rate_bytes_per_sec"].as_u64().unwrap() > 0);
    let partway = seen.iter().any(|v| {
        let done = v["done_bytes"].as_u64().unwrap_or(0);
        v["state"] == json!("running") && done > 0 && done < total
    });
    assert!(partway, "progress was reported on the way: {seen:?}");
    let done: Vec<u64> = seen
        .iter()
        .map(|v| v["done_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {done:?}"
    );
    assert!(
        cached_whole(&spool.cache_dir, &url),
        "every chunk is in the index"
    );
    assert_eq!(
        origin.path_stats("p.mp4").body_bytes,
        total,
        "each byte fetched once"
    );
    // Listed among the jobs.
    let (_, jobs) = api_get(&spool, "/api/prefetch").await;
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["job"].as_u64() == Some(id)));

    // Again: nothing is missing, nothing is fetched.
    origin.reset_stats();
    let (status, job) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 202, "a new job: the first one ended");
    let (_, last) = follow(&spool, job["job"].as_u64().unwrap()).await;
    assert_eq!(last["state"], json!("done"), "{last}");
    assert_eq!(last["fetched_bytes"], json!(0));
    assert_eq!(last["cached_at_start_bytes"], json!(total));
    assert_eq!(origin.stats().body_bytes, 0, "the origin sent nothing");
    // Stopping a job that ended is a conflict.
    let (status, _) = call(
        &client(),
        "DELETE",
        &format!("{}/api/prefetch/{}", spool.admin(), job["job"]),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409);
}

/// A prefetch stopped half-way keeps what it fetched; run again, it
/// fetches only the rest.
#[tokio::test]
async fn a_stopped_prefetch_resumes_where_it_stopped() {
    let origin = Origin::start().await;
    let body = data(24 * 64 * 1024, 5);
    origin.add_file("r.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = origin.url("r.mp4");
    let total = body.len() as u64;
    origin.set_faults("r.mp4", Faults::throttled(500_000));
    let (status, job) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/api/prefetch/{}", job["job"]);
    wait_for("a few chunks cached", || async {
        cached_chunks(&spool.cache_dir, &url).len() >= 3
    })
    .await;
    let (status, v) = call(
        &client(),
        "DELETE",
        &format!("{}{path}", spool.admin()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_for("the job to stop", || async {
        api_get(&spool, &path).await.1["state"] == json!("cancelled")
    })
    .await;
    // Downloads of the stopped job run out (nobody wants them any more).
    let id = media_id(&spool, &url).await;
    wait_for("downloads to stop", || async {
        let (_, m) = api_get(&spool, &format!("/api/media/{id}")).await;
        !m["runs"].to_string().contains("downloading")
    })
    .await;
    let kept = cached_chunks(&spool.cache_dir, &url).len() as u64;
    assert!((3..24).contains(&kept), "{kept} chunks kept");
    origin.clear_faults("r.mp4");
    origin.reset_stats();
    let (status, job) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 202, "{job}");
    let (_, last) = follow(&spool, job["job"].as_u64().unwrap()).await;
    assert_eq!(last["state"], json!("done"), "{last}");
    let had = last["cached_at_start_bytes"].as_u64().unwrap();
    assert_eq!(had, kept * 64 * 1024);
    assert_eq!(last["fetched_bytes"].as_u64().unwrap(), total - had);
    assert!(
        origin.stats().body_bytes <= total - had,
        "only the missing part was fetched: {} of {}",
        origin.stats().body_bytes,
        total - had
    );
    assert!(cached_whole(&spool.cache_dir, &url));
}

#[tokio::test]
async fn pause_and_resume_caching() {
    let origin = Origin::start().await;
    let body = data(5 * 64 * 1024, 6);
    origin.add_file("c.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = origin.url("c.mp4");
    let (status, v) = api_post(&spool, "/api/caching/pause", &Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["changed"].clone(), v["caching"].clone()),
        (json!(true), json!("paused: by admin"))
    );
    let (_, v) = api_post(&spool, "/api/caching/pause", &Value::Null).await;
    assert_eq!(v["changed"], json!(false), "already paused");
    let (_, s) = api_get(&spool, "/api/status").await;
    assert_eq!(s["caching"]["paused_by_admin"], json!(true));
    assert!(!spool.server.is_caching());
    // Streams go on, uncached.
    let (status, _, got) = get(&client(), &spool.url(&url), None).await;
    assert_eq!((status, got == body), (200, true));
    let id = media_id(&spool, &url).await;
    let (_, m) = api_get(&spool, &format!("/api/media/{id}")).await;
    assert_eq!(m["cached_chunks"], json!(0), "{m}");
    assert!(cached_chunks(&spool.cache_dir, &url).is_empty());
    // A prefetch would keep nothing: refused.
    let (status, v) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("paused"));

    let (status, v) = api_post(&spool, "/api/caching/resume", &Value::Null).await;
    assert_eq!(
        (status, v["changed"].clone(), v["caching"].clone()),
        (200, json!(true), json!("writing"))
    );
    // The chunks the stream kept in memory while paused are written on
    // resume, with no read and no origin request.
    assert_eq!(v["kept_chunks_writing"], json!(5), "{v}");
    let requests = origin.stats().requests;
    wait_for("the kept chunks to be written", || async {
        cached_whole(&spool.cache_dir, &url)
    })
    .await;
    assert_eq!(origin.stats().requests, requests);
    let (_, v) = api_post(&spool, "/api/caching/resume", &Value::Null).await;
    assert_eq!(v["changed"], json!(false));
    assert_eq!(v["kept_chunks_writing"], json!(0));
    let (status, job) = api_post(&spool, "/api/prefetch", &json!({ "url": url })).await;
    assert_eq!(status, 202, "{job}");
    let (_, last) = follow(&spool, job["job"].as_u64().unwrap()).await;
    assert_eq!(last["state"], json!("done"), "{last}");
    assert!(cached_whole(&spool.cache_dir, &url));
}

fn spool_bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_spool"));
    for v in [
        "SPOOL_ADMIN_TOKEN",
        "SPOOL_LISTEN",
        "SPOOL_ADMIN_LISTEN",
        "SPOOL_CONFIG",
        "SPOOL_CACHE_DIR",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(cmd: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `spool prefetch` and `spool ls` as the real binary, against a spool
/// that wants the token; `ls` reads the index itself when no spool runs.
// Multi-threaded: the commands run as blocking child processes while the
// server in this process answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_prefetch_commands() {
    let origin = Origin::start().await;
    let body = data(12 * 64 * 1024, 7);
    origin.add_file("cli.mp4", body.clone(), "video/mp4");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.admin_token = Some(TOKEN.into());
    let media = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let listen = format!("0.0.0.0:{}", listener.local_addr().unwrap().port());
    let server = spool::Server::new(cfg).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = spool::Listeners {
        media,
        admin: Some(listener),
    };
    let task = tokio::spawn(server.serve_on(listeners, async {
        let _ = stopped.await;
    }));
    let url = origin.url("cli.mp4");

    // Without the token: told what to set.
    let (code, _, err) = run(spool_bin().args(["prefetch", &url, "--admin-listen", &listen]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("SPOOL_ADMIN_TOKEN"), "{err}");
    // With it: warmed whole.
    let (code, out, err) = run(spool_bin()
        .args(["prefetch", &url, "--admin-listen", &listen])
        .env("SPOOL_ADMIN_TOKEN", TOKEN));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("cli.mp4: done, 768.00 KiB of 768.00 KiB cached (768.00 KiB fetched"),
        "{out}"
    );
    assert!(cached_whole(tmp.path(), &url));
    // Again: nothing fetched.
    origin.reset_stats();
    let (code, out, err) = run(spool_bin()
        .args(["prefetch", &url, "--admin-listen", &listen])
        .env("SPOOL_ADMIN_TOKEN", TOKEN));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(0 B fetched"), "{out}");
    assert_eq!(origin.stats().body_bytes, 0);
    // A URL it may not fetch: refused with the reason, exit 1.
    let (code, out, _) = run(spool_bin()
        .args([
            "prefetch",
            "http://10.9.9.9/x.mp4",
            "--admin-listen",
            &listen,
        ])
        .env("SPOOL_ADMIN_TOKEN", TOKEN));
    assert_eq!(code, Some(1));
    assert!(out.contains("refused (403 Forbidden"), "{out}");

    // ls through the server: the bar, share, size.
    let (code, out, err) = run(spool_bin()
        .args(["ls", "--admin-listen", &listen])
        .env("SPOOL_ADMIN_TOKEN", TOKEN));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("from the running spool"), "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("cli.mp4"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("[####################]  100.0%") && row.contains("768.00 KiB"),
        "{row}"
    );

    // No server: ls reads the index read-only, the same table.
    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    let (code, out2, err) = run(spool_bin()
        .args(["ls", "--admin-listen", &listen, "--cache-dir"])
        .arg(tmp.path()));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("read-only"), "{err}");
    let row2 = out2
        .lines()
        .find(|l| l.contains("cli.mp4"))
        .unwrap_or_else(|| panic!("{out2}"));
    assert_eq!(row2.split("  ").next(), row.split("  ").next());
    assert!(row2.contains("[####################]  100.0%"), "{row2}");
    // prefetch without a server says it needs one.
    let (code, _, err) = run(spool_bin().args(["prefetch", &url, "--admin-listen", &listen]));
    assert_eq!(code, Some(1));
    assert!(err.contains("running spool"), "{err}");
}

/// A credential in an upstream URL's query (`api_key=`) or in its user
/// info stays out of every view: the admin API (media, chunk map,
/// streams), `spool ls`, and the index's `media_summary` through the real
/// `sqlite3`. The cache directory and the index are spool's user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_stay_out_of_every_view() {
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::start().await;
    origin.add_file("key.mp4", data(8 * 64 * 1024, 71), "video/mp4");
    origin.set_faults("key.mp4", Faults::throttled(256 * 1024));
    let spool = Spool::start(&origin).await;
    let url = format!("{}?api_key=hunter2&x=1", origin.url("key.mp4"));
    // A player reads a little and holds the stream open.
    let mut playing = client().get(spool.url(&url)).send().await.unwrap();
    assert!(!playing.chunk().await.unwrap().unwrap().is_empty());
    let mut seen = String::new();
    let (_, status) = api_get(&spool, "/api/status").await;
    assert!(
        status["streams"].as_array().is_some_and(|s| !s.is_empty()),
        "{status}"
    );
    seen += &status.to_string();
    drop(playing);
    let (_, media) = api_get(&spool, "/api/media").await;
    seen += &media.to_string();
    let id = media["media"][0]["id"].as_i64().unwrap();
    let (_, map) = api_get(&spool, &format!("/api/media/{id}")).await;
    seen += &map.to_string();
    assert!(seen.contains("key.mp4?REDACTED"), "{seen}");
    let (code, ls, err) = run(spool_bin()
        .args(["ls", "--admin-listen", "127.0.0.1:1", "--cache-dir"])
        .arg(&spool.cache_dir));
    assert_eq!(code, Some(0), "{err}");
    assert!(ls.contains("key.mp4?REDACTED"), "{ls}");
    seen += &ls;
    // The view people query with the sqlite3 CLI, with a user's password
    // in another URL too.
    let index = spool.cache_dir.join("index.db");
    let conn = rusqlite::Connection::open(&index).unwrap();
    // Read a day from now: spool's upkeep forgets rows with nothing cached
    // that nobody read for a while, and must not take these meanwhile.
    conn.execute(
        "INSERT INTO media (url, size_bytes, chunk_size_bytes, accepts_ranges, probed_unix, last_access_unix)
         VALUES ('http://user:pw-secret@h.example:8080/a@b/c.mp4?token=t0ken', 10, 4, 1, 0,
                 CAST(strftime('%s', 'now') AS INTEGER) + 86400),
                ('http://h.example/plain.mp4', 10, 4, 1, 0, CAST(strftime('%s', 'now') AS INTEGER) + 86400)",
        [],
    )
    .unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(&index)
        .arg("SELECT url FROM media_summary ORDER BY url")
        .output()
        .expect("the sqlite3 CLI is installed (scripts/test installs it)");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        [
            &format!("{}?REDACTED", origin.url("key.mp4")),
            "http://h.example/plain.mp4",
            "http://user@h.example:8080/a@b/c.mp4?REDACTED",
        ]
    );
    seen += &shown;
    for secret in ["hunter2", "api_key", "pw-secret", "t0ken"] {
        assert!(!seen.contains(secret), "{secret} in:\n{seen}");
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool.cache_dir), 0o700);
    assert_eq!(mode(&index), 0o600);
}

/// `spool prefetch` follows its job until it ends; Ctrl-C (SIGINT), SIGTERM
/// or a closed terminal (SIGHUP) stops the server's job within 2 s and the
/// command exits 130. With `--detach` it starts the job and returns 0 at
/// once, and the job runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_prefetch_command_stops_its_job() {
    let origin = Origin::start().await;
    origin.add_file("slow.mp4", data(64 * 64 * 1024, 72), "video/mp4");
    // 4 MiB at 128 KiB/s: half a minute, far longer than the test waits.
    origin.set_faults("slow.mp4", Faults::throttled(128 * 1024));
    let spool = Spool::start(&origin).await;
    let url = origin.url("slow.mp4");
    let admin = spool.admin();
    let addr = admin.trim_start_matches("http://").to_owned();
    let mut seen = Vec::new();
    for signal in ["-INT", "-TERM", "-HUP"] {
        let mut child = spool_bin()
            .args(["prefetch", &url, "--admin-listen", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let job = running_job(&spool, &seen).await;
        seen.push(job);
        let sent = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let t0 = std::time::Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(2),
                "spool prefetch still runs 2 s after {signal}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(code, Some(130), "after {signal}");
        // The job task marks itself cancelled when it sees the stop.
        loop {
            let (_, v) = api_get(&spool, &format!("/api/prefetch/{job}")).await;
            if v["state"] == json!("cancelled") {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(2),
                "the job still runs 2 s after {signal}: {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // Detached: the command returns at once, the job runs on.
    let (code, out, err) =
        run(spool_bin().args(["prefetch", "--detach", &url, "--admin-listen", &addr]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("started; it runs on in the server"), "{out}");
    let job = running_job(&spool, &seen).await;
    let (_, v) = api_get(&spool, &format!("/api/prefetch/{job}")).await;
    assert_eq!(v["state"], json!("running"), "{v}");
    // Its ETA comes from the rate of the last seconds: the origin's
    // 128 KiB/s.
    let deadline = tokio::time::Instant::now() + common::WAIT_LIMIT;
    let v = loop {
        let (_, v) = api_get(&spool, &format!("/api/prefetch/{job}")).await;
        if v["eta_secs"].is_u64() {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ETA: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let left = v["total_bytes"].as_u64().unwrap() - v["done_bytes"].as_u64().unwrap();
    let expected = left as f64 / (128.0 * 1024.0);
    let eta = v["eta_secs"].as_u64().unwrap() as f64;
    assert!(
        eta >= expected * 0.5 && eta <= expected * 2.0 + 1.0,
        "ETA {eta} s, expected about {expected:.0} s: {v}"
    );
}

/// A running prefetch job other than those in `old`.
async fn running_job(spool: &Spool, old: &[u64]) -> u64 {
    let deadline = tokio::time::Instant::now() + common::WAIT_LIMIT;
    loop {
        let (_, v) = api_get(spool, "/api/prefetch").await;
        let found = v["jobs"].as_array().and_then(|jobs| {
            jobs.iter()
                .filter(|j| j["state"] == json!("running"))
                .filter_map(|j| j["job"].as_u64())
                .find(|id| !old.contains(id))
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no running job: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `GET /api/media` pages, searches and sorts when asked to; without
/// parameters it lists every media as before.
#[tokio::test]
async fn the_media_list_pages_searches_and_sorts() {
    let origin = Origin::start().await;
    for (name, len) in [
        ("alpha.mp4", 100_000),
        ("beta.mkv", 300_000),
        ("gamma.mp4", 200_000),
    ] {
        origin.add_file(name, data(len, len as u64), "video/mp4");
    }
    let spool = Spool::start(&origin).await;
    for name in ["alpha.mp4", "beta.mkv", "gamma.mp4"] {
        let url = origin.url(name);
        let (status, _, _) = get(&client(), &spool.url(&url), None).await;
        assert_eq!(status, 200);
        wait_until_cached(&spool.cache_dir, &url).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["media"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let url = m["url"].as_str().unwrap();
                url.rsplit('/')
                    .next()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (_, all) = api_get(&spool, "/api/media").await;
    assert_eq!(names(&all).len(), 3, "{all}");
    let (_, v) = api_get(&spool, "/api/media?sort=size&limit=2").await;
    assert_eq!(names(&v), ["beta.mkv", "gamma.mp4"], "{v}");
    assert_eq!(
        (v["total"].as_u64(), v["limit"].as_u64()),
        (Some(3), Some(2))
    );
    let (_, v) = api_get(&spool, "/api/media?sort=size&limit=2&offset=2").await;
    assert_eq!(names(&v), ["alpha.mp4"], "{v}");
    let (_, v) = api_get(&spool, "/api/media?sort=url").await;
    assert_eq!(names(&v), ["alpha.mp4", "beta.mkv", "gamma.mp4"], "{v}");
    let (_, v) = api_get(&spool, "/api/media?q=.MP4").await;
    assert_eq!((v["total"].as_u64(), names(&v).len()), (Some(2), 2), "{v}");
    for bad in ["sort=newest", "limit=x", "page=2"] {
        let (status, v) = api_get(&spool, &format!("/api/media?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
}
