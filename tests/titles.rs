//! Titles over real HTTP: an HLS stream (master, variants, an audio
//! rendition, keys, init sections, segments) and a DASH title are one row
//! each in the admin API, beside the files no playlist names; their parts
//! are listed with queries redacted; a pinned title outlives
//! `--max-cache-size` while an unpinned one does not; a title whose links
//! are signed anew for each player is one title.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::Origin;
use common::{client, data, get, wait_for, wait_until_cached, Spool};
use serde_json::{json, Value};

const HLS: &str = "application/vnd.apple.mpegurl";

async fn api(spool: &Spool, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = client();
    let url = format!("{}{path}", spool.admin());
    let req = match method {
        "POST" => c
            .post(&url)
            .header("content-type", "application/json")
            .body(body.unwrap_or(json!({})).to_string()),
        _ => c.get(&url),
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// The files of an HLS stream under `dir`: path → bytes. One segment's
/// URL carries a token in its query.
fn hls_files(dir: &str, seed: u64) -> Vec<(String, Bytes)> {
    [
        ("lo/init.mp4", 1_000),
        ("keys/k.bin", 16),
        ("lo/s0.ts", 150_000),
        ("lo/s1.ts", 140_000),
        ("hi/s0.ts", 200_000),
        ("hi/s1.ts", 90_000),
        ("audio/a0.aac", 30_000),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (p, len))| (format!("{dir}/{p}"), data(len, seed + i as u64)))
    .collect()
}

fn add_hls(origin: &Origin, dir: &str, seed: u64) {
    origin.add_file(
        &format!("{dir}/master.m3u8"),
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n\
              #EXT-X-STREAM-INF:BANDWIDTH=1000,AUDIO=\"a\"\nlo/index.m3u8\n\
              #EXT-X-STREAM-INF:BANDWIDTH=2000,AUDIO=\"a\"\nhi/index.m3u8\n",
        ),
        HLS,
    );
    origin.add_file(
        &format!("{dir}/lo/index.m3u8"),
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
              #EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k.bin\",IV=0x01\n\
              #EXTINF:4,\ns0.ts?token=seg-secret\n#EXTINF:3.5,\ns1.ts\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    origin.add_file(
        &format!("{dir}/hi/index.m3u8"),
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\ns0.ts\n#EXTINF:3.5,\ns1.ts\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    origin.add_file(
        &format!("{dir}/audio/en.m3u8"),
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na0.aac\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    for (path, body) in hls_files(dir, seed) {
        origin.add_file(&path, body, "video/mp2t");
    }
}

/// Walks a stream as a player does: the playlist at `start` and every
/// URI in it, recursively (all renditions). Returns how many media files
/// it read.
async fn play(spool: &Spool, start: &str) -> usize {
    let c = client();
    let mut todo = vec![start.to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    let mut media = 0;
    while let Some(u) = todo.pop() {
        let (status, _, body) = get(&c, &u, None).await;
        assert_eq!(status, 200, "{u}");
        if !body.starts_with(b"#EXTM3U") {
            media += 1;
            continue;
        }
        for line in String::from_utf8(body.to_vec()).unwrap().lines() {
            let uri = match line.find("URI=\"") {
                Some(i) => line[i + 5..].split('"').next().unwrap().to_owned(),
                None if !line.starts_with('#') && !line.is_empty() => line.to_owned(),
                None => continue,
            };
            if seen.insert(uri.clone()) {
                todo.push(format!("{}{uri}", spool.base()));
            }
        }
    }
    media
}

/// The URL of a file of the HLS stream as the index's `media_summary`
/// shows it (the query redacted).
fn origin_url(origin: &Origin, path: &str) -> String {
    let u = origin.url(path);
    if path.ends_with("lo/s0.ts") {
        format!("{u}?REDACTED")
    } else {
        u
    }
}

async fn wait_cached(spool: &Spool, origin: &Origin, dir: &str) {
    for (path, _) in hls_files(dir, 0) {
        wait_until_cached(&spool.cache_dir, &origin_url(origin, &path)).await;
    }
}

/// A DASH title: a static manifest with a numbered template, two video
/// representations of an init section and three segments each.
fn add_dash(origin: &Origin) {
    origin.add_file(
        "dash/manifest.mpd",
        Bytes::from_static(
            br#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
 <Period start="PT0S">
  <AdaptationSet contentType="video" segmentAlignment="true">
   <SegmentTemplate timescale="1000" duration="2000" initialization="init-$RepresentationID$.mp4" media="seg-$RepresentationID$-$Number$.m4s" startNumber="1"/>
   <Representation id="v1" bandwidth="500000" mimeType="video/mp4" codecs="avc1.4d401e" width="640" height="360"/>
   <Representation id="v2" bandwidth="900000" mimeType="video/mp4" codecs="avc1.4d401f" width="1280" height="720"/>
  </AdaptationSet>
 </Period>
</MPD>"#,
        ),
        "application/dash+xml",
    );
    for (i, rep) in ["v1", "v2"].into_iter().enumerate() {
        origin.add_file(
            &format!("dash/init-{rep}.mp4"),
            data(900, 60 + i as u64),
            "video/mp4",
        );
        for n in 1..=3 {
            origin.add_file(
                &format!("dash/seg-{rep}-{n}.m4s"),
                data(50_000, 70 + 10 * i as u64 + n),
                "video/mp4",
            );
        }
    }
}

fn rows(v: &Value) -> &Vec<Value> {
    v["titles"].as_array().unwrap()
}

fn row<'a>(v: &'a Value, ends: &str) -> &'a Value {
    rows(v)
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with(ends))
        .unwrap_or_else(|| panic!("no row for {ends}: {v}"))
}

fn spool_bin(args: &[&str]) -> (Option<i32>, String, String) {
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
    let out = c.args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: `spool ls` and `spool pin` run as blocking child
// processes while the server in this process answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_one_title_beside_the_lone_files() {
    let origin = Origin::start().await;
    add_hls(&origin, "show", 10);
    add_dash(&origin);
    origin.add_file("film.mp4", data(300_000, 5), "video/mp4");
    let spool = Spool::start(&origin).await;

    // A player reads a variant's playlist before the master names it:
    // its title is merged into the master's.
    play(&spool, &spool.url(&origin.url("show/lo/index.m3u8"))).await;
    assert_eq!(
        play(&spool, &spool.url(&origin.url("show/master.m3u8"))).await,
        7
    );
    wait_cached(&spool, &origin, "show").await;
    // DASH: the manifest, then one representation, as a player reads it.
    let (status, _, _) = get(
        &client(),
        &spool.url(&origin.url("dash/manifest.mpd")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for f in [
        "init-v1.mp4",
        "seg-v1-1.m4s",
        "seg-v1-2.m4s",
        "seg-v1-3.m4s",
    ] {
        let u = origin.url(&format!("dash/{f}"));
        assert_eq!(get(&client(), &spool.url(&u), None).await.0, 200);
        wait_until_cached(&spool.cache_dir, &u).await;
    }
    let film = origin.url("film.mp4");
    assert_eq!(get(&client(), &spool.url(&film), None).await.0, 200);
    wait_until_cached(&spool.cache_dir, &film).await;

    let (status, list) = api(&spool, "GET", "/api/titles", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 3, "one row per title and lone file: {list}");
    let hls = row(&list, "show/master.m3u8");
    assert_eq!(hls["kind"], "hls");
    assert_eq!(hls["renditions"], 3, "two variants, one audio rendition");
    assert_eq!(hls["files"], 7, "{hls}");
    assert_eq!(hls["cached_files"], 7);
    assert_eq!(hls["cached_percent"], 100.0);
    assert_eq!(hls["duration_secs"], 7.5);
    let bytes: u64 = hls_files("show", 10)
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(hls["size_bytes"], bytes);
    assert_eq!(hls["cached_bytes"], bytes);

    let dash = row(&list, "dash/manifest.mpd");
    assert_eq!(dash["kind"], "dash");
    assert_eq!(dash["renditions"], 2);
    assert_eq!(dash["files"], 8, "both representations' init and segments");
    assert_eq!(dash["cached_files"], 4);
    assert_eq!(
        dash["cached_percent"], 100.0,
        "of the representation played"
    );
    assert_eq!(dash["duration_secs"], 6.0);

    let f = row(&list, "film.mp4");
    assert_eq!(
        (f["kind"].as_str(), f["cached_percent"].as_f64()),
        (Some("file"), Some(100.0))
    );
    assert!(f["title_id"].is_null() && f["media_id"].is_number());

    // Search and sort.
    let (_, found) = api(&spool, "GET", "/api/titles?q=MANIFEST&sort=size", None).await;
    assert_eq!(found["total"], 1, "{found}");
    let (_, by_size) = api(&spool, "GET", "/api/titles?sort=size&limit=1", None).await;
    assert!(
        rows(&by_size)[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("master.m3u8"),
        "{by_size}"
    );
    let (status, bad) = api(&spool, "GET", "/api/titles?sort=loud", None).await;
    assert_eq!(status, 400, "{bad}");

    // A title's parts, with queries redacted.
    let id = hls["title_id"].as_i64().unwrap();
    let (status, one) = api(&spool, "GET", &format!("/api/titles/{id}"), None).await;
    assert_eq!(status, 200, "{one}");
    let parts = one["parts"].as_array().unwrap();
    assert_eq!(
        parts.len(),
        11,
        "master, three playlists, seven files: {one}"
    );
    assert!(one.to_string().contains("lo/s0.ts?REDACTED"), "{one}");
    assert!(!one.to_string().contains("seg-secret"), "{one}");
    assert!(!list.to_string().contains("seg-secret"));
    let s1 = parts
        .iter()
        .find(|p| p["url"].as_str().unwrap().ends_with("hi/s1.ts"))
        .unwrap();
    assert_eq!(s1["role"], "segment");
    assert_eq!(
        (s1["size_bytes"].as_u64(), s1["cached_bytes"].as_u64()),
        (Some(90_000), Some(90_000))
    );
    assert_eq!(api(&spool, "GET", "/api/titles/999", None).await.0, 404);

    // The media list is unchanged: every segment is a media there.
    let (_, media) = api(&spool, "GET", "/api/media", None).await;
    assert_eq!(media["media"].as_array().unwrap().len(), 7 + 4 + 1);

    // `spool pin` and `spool ls`, the real binary: three rows.
    let admin = spool.admin().trim_start_matches("http://").to_owned();
    let master = origin.url("show/master.m3u8");
    let (code, out, err) = spool_bin(&["pin", &master, "--admin-listen", &admin]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(&format!("pinned title {id} (hls, 100.0% cached): ")),
        "{out}"
    );
    let (code, out, err) =
        spool_bin(&["pin", &origin.url("nothing.mp4"), "--admin-listen", &admin]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("refused (404"), "{out}");
    let (code, ls, err) = spool_bin(&["ls", "--admin-listen", &admin]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ls.lines().count(), 4, "a header and three rows:\n{ls}");
    let line = ls.lines().find(|l| l.contains("master.m3u8")).unwrap();
    assert!(line.trim_start().starts_with(&format!("t{id} ")), "{line}");
    assert!(line.contains("[####################]  100.0%"), "{line}");
    assert!(
        line.ends_with("(HLS, 3 renditions, 7/7 files, 0:08, pinned)"),
        "{line}"
    );
    let (code, media_ls, _) = spool_bin(&["ls", "--media", "--admin-listen", &admin]);
    assert_eq!(code, Some(0));
    assert_eq!(media_ls.lines().count(), 1 + 12, "{media_ls}");
    // With no spool running: the same rows from the index.
    let (dir, _keep) = spool.stop().await;
    let (code, ro, err) = spool_bin(&[
        "ls",
        "--admin-listen",
        "127.0.0.1:1",
        "--cache-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("read-only"), "{err}");
    let strip = |t: &str| -> Vec<String> {
        // The age column moves with the clock.
        t.lines()
            .map(|l| {
                l.split("  (")
                    .next()
                    .unwrap()
                    .split(" ago)")
                    .last()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(strip(&ro), strip(&ls));
    assert!(
        ro.contains("(HLS, 3 renditions, 7/7 files, 0:08, pinned)"),
        "{ro}"
    );
}

#[tokio::test]
async fn a_pinned_title_outlives_the_cache_size_limit() {
    let origin = Origin::start().await;
    add_hls(&origin, "kept", 20);
    add_hls(&origin, "gone", 40);
    let big = data(2 * 1024 * 1024, 9);
    origin.add_file("big.mp4", big.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.max_cache_size = 1536 * 1024).await;
    for dir in ["kept", "gone"] {
        play(
            &spool,
            &spool.url(&origin.url(&format!("{dir}/master.m3u8"))),
        )
        .await;
        wait_cached(&spool, &origin, dir).await;
    }
    // Pinned by its master's URL; a segment's URL names the same title.
    let (status, pinned) = api(
        &spool,
        "POST",
        "/api/pin",
        Some(json!({ "url": origin.url("kept/hi/s1.ts") })),
    )
    .await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["title"]["pinned"], true);
    assert!(pinned["title"]["url"]
        .as_str()
        .unwrap()
        .ends_with("kept/master.m3u8"));
    let (status, missing) = api(
        &spool,
        "POST",
        "/api/pin",
        Some(json!({ "url": origin.url("never/seen.mp4") })),
    )
    .await;
    assert_eq!(status, 404, "{missing}");

    // 2 MiB more than the limit allows: the cache is trimmed.
    let (status, _, body) = get(&client(), &spool.url(&origin.url("big.mp4")), None).await;
    assert_eq!((status, body.len()), (200, big.len()));
    wait_for("the unpinned title to be evicted", || async {
        let (_, l) = api(&spool, "GET", "/api/titles", None).await;
        row(&l, "gone/master.m3u8")["cached_bytes"] == 0
    })
    .await;
    let (_, l) = api(&spool, "GET", "/api/titles", None).await;
    let kept = row(&l, "kept/master.m3u8");
    assert_eq!(kept["cached_percent"], 100.0, "{kept}");
    assert_eq!(kept["pinned"], true);
    for (path, _) in hls_files("kept", 0) {
        assert!(
            common::cached_whole(&spool.cache_dir, &origin_url(&origin, &path)),
            "{path}"
        );
    }

    // Unpinned by id: it may go like any other.
    let id = kept["title_id"].as_i64().unwrap();
    let (status, v) = api(&spool, "POST", &format!("/api/titles/{id}/unpin"), None).await;
    assert_eq!((status, &v["title"]["pinned"]), (200, &json!(false)));
}

/// An origin whose links carry a token signed anew for each player
/// (`--cache-key-ignore-query token`): a part signed in its playlist is
/// the media it names, the title is one row whatever token its master
/// came with, a pin by a URL signed anew finds it, and after a restart
/// with the origin down the title plays from a link signed anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_signed_anew_for_each_player_is_one_title() {
    let origin = Origin::start().await;
    add_hls(&origin, "show", 10);
    let keyed = |c: &mut spool::Config| {
        c.cache_key_ignore_query = spool::upstream::QueryFilter::parse_list("token").unwrap();
    };
    let spool = Spool::start_with(&origin, keyed).await;
    let master = |token: &str| format!("{}?token={token}", origin.url("show/master.m3u8"));
    assert_eq!(play(&spool, &spool.url(&master("one"))).await, 7);
    for (path, _) in hls_files("show", 0) {
        wait_until_cached(&spool.cache_dir, &origin.url(&path)).await;
    }
    assert_eq!(play(&spool, &spool.url(&master("two"))).await, 7);
    let (_, list) = api(&spool, "GET", "/api/titles", None).await;
    assert_eq!(list["total"], 1, "one title: {list}");
    let hls = row(&list, "show/master.m3u8");
    assert_eq!(
        (&hls["files"], &hls["cached_files"], &hls["cached_percent"]),
        (&json!(7), &json!(7), &json!(100.0)),
        "the signed segment counts as cached: {hls}"
    );
    let signed = format!("{}?token=three", origin.url("show/lo/s0.ts"));
    let (status, pinned) = api(&spool, "POST", "/api/pin", Some(json!({ "url": signed }))).await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["title"]["title_id"], hls["title_id"]);

    let (dir, _keep) = spool.stop().await;
    let down = common::origin::Faults {
        status: Some(503),
        ..Default::default()
    };
    for p in [
        "master.m3u8",
        "lo/index.m3u8",
        "hi/index.m3u8",
        "audio/en.m3u8",
    ] {
        origin.set_faults(&format!("show/{p}"), down.clone());
    }
    for (path, _) in hls_files("show", 0) {
        origin.set_faults(&path, down.clone());
    }
    let mut cfg = common::test_config(&dir, &origin);
    keyed(&mut cfg);
    let spool = Spool::start_cfg(cfg).await;
    assert_eq!(
        play(&spool, &spool.url(&master("four"))).await,
        7,
        "offline, from a link signed anew"
    );
}

/// Titles recorded under signed URLs (before the settings named the
/// parameter) move to their keys at start: the title reached again with
/// a link signed anew is the same row, its pin kept, all its files counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_recorded_under_signed_urls_move_to_their_keys_at_start() {
    let origin = Origin::start().await;
    add_hls(&origin, "show", 10);
    let master = |token: &str| format!("{}?token={token}", origin.url("show/master.m3u8"));
    let spool = Spool::start(&origin).await;
    assert_eq!(play(&spool, &spool.url(&master("one"))).await, 7);
    let (status, _) = api(
        &spool,
        "POST",
        "/api/pin",
        Some(json!({ "url": master("one") })),
    )
    .await;
    assert_eq!(status, 200);
    let (dir, _keep) = spool.stop().await;
    let mut cfg = common::test_config(&dir, &origin);
    cfg.cache_key_ignore_query = spool::upstream::QueryFilter::parse_list("token").unwrap();
    let spool = Spool::start_cfg(cfg).await;
    wait_for("the title under its key", || async {
        let (_, list) = api(&spool, "GET", "/api/titles", None).await;
        rows(&list)
            .iter()
            .any(|r| r["url"].as_str().unwrap().ends_with("show/master.m3u8"))
    })
    .await;
    assert_eq!(play(&spool, &spool.url(&master("two"))).await, 7);
    for (path, _) in hls_files("show", 0) {
        wait_until_cached(&spool.cache_dir, &origin.url(&path)).await;
    }
    let (_, list) = api(&spool, "GET", "/api/titles", None).await;
    let titles: Vec<&Value> = rows(&list).iter().filter(|r| r["kind"] == "hls").collect();
    assert_eq!(titles.len(), 1, "{list}");
    let t = titles[0];
    assert_eq!(
        (&t["files"], &t["cached_files"], &t["pinned"]),
        (&json!(7), &json!(7), &json!(true)),
        "{t}"
    );
}

/// Follows a prefetch job until it ends; its last view.
async fn follow(spool: &Spool, job: &Value) -> Value {
    let path = format!("/api/prefetch/{}", job["job"].as_u64().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api(spool, "GET", &path, None).await;
        if !matches!(v["state"].as_str(), Some("starting" | "running")) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A prefetch of a master playlist warms the chosen variant with its
/// audio rendition, its key and init section, and nothing else; a second
/// one with another variant adds that one.
#[tokio::test]
async fn a_prefetch_of_a_master_warms_the_chosen_variant_whole() {
    let origin = Origin::start().await;
    add_hls(&origin, "p", 30);
    let spool = Spool::start(&origin).await;
    let master = origin.url("p/master.m3u8");
    let cached = |path: &str| common::cached_whole(&spool.cache_dir, &origin_url(&origin, path));
    let size = |paths: &[&str]| -> u64 {
        hls_files("p", 30)
            .iter()
            .filter(|(p, _)| paths.iter().any(|x| p.ends_with(x)))
            .map(|(_, b)| b.len() as u64)
            .sum()
    };

    let (status, bad) = api(
        &spool,
        "POST",
        "/api/prefetch",
        Some(json!({ "url": master, "variant": "fast" })),
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    let (status, job) = api(
        &spool,
        "POST",
        "/api/prefetch",
        Some(json!({ "url": master })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let last = follow(&spool, &job).await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["variant"], "best");
    assert_eq!(
        (last["files_total"].as_u64(), last["files_done"].as_u64()),
        (Some(3), Some(3)),
        "{last}"
    );
    let best = size(&["hi/s0.ts", "hi/s1.ts", "audio/a0.aac"]);
    assert_eq!(last["total_bytes"], best, "{last}");
    assert_eq!(last["fetched_bytes"], best);
    assert_eq!(last["total_estimated"], false);
    for p in ["hi/s0.ts", "hi/s1.ts", "audio/a0.aac"] {
        assert!(cached(&format!("p/{p}")), "{p}");
    }
    for p in ["lo/s0.ts", "lo/s1.ts", "lo/init.mp4", "keys/k.bin"] {
        assert!(!cached(&format!("p/{p}")), "{p} is not the best variant's");
    }
    // The origin sent the chosen files and their playlists once each.
    let sent = origin.stats().body_bytes;
    assert!(sent >= best && sent < best + 2_000, "{sent} for {best}");

    // The worst variant: what it shares with the best (the audio) is
    // not fetched again.
    origin.reset_stats();
    let (_, job) = api(
        &spool,
        "POST",
        "/api/prefetch",
        Some(json!({ "url": master, "variant": "worst" })),
    )
    .await;
    let last = follow(&spool, &job).await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["files_total"], 5, "init, key, two segments, the audio");
    let worst = size(&["lo/init.mp4", "keys/k.bin", "lo/s0.ts", "lo/s1.ts"]);
    assert_eq!(last["fetched_bytes"], worst, "{last}");
    assert_eq!(last["cached_at_start_bytes"], size(&["audio/a0.aac"]));
    assert!(origin.stats().body_bytes < worst + 2_000);

    // All of it is one title, cached whole.
    let (_, l) = api(&spool, "GET", "/api/titles", None).await;
    let t = row(&l, "p/master.m3u8");
    assert_eq!(
        (t["files"].as_u64(), t["cached_files"].as_u64()),
        (Some(7), Some(7)),
        "{t}"
    );

    // A segment that fails: the job ends incomplete, with the reason.
    origin.remove_file("p/hi/s1.ts");
    let (_, d) = api(&spool, "GET", "/api/media", None).await;
    let id = d["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"].as_str().unwrap().ends_with("p/hi/s1.ts"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let c = client();
    let r = c
        .delete(format!("{}/api/media/{id}", spool.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, job) = api(
        &spool,
        "POST",
        "/api/prefetch",
        Some(json!({ "url": master, "variant": "all" })),
    )
    .await;
    let last = follow(&spool, &job).await;
    assert_eq!(last["state"], "incomplete", "{last}");
    assert_eq!(
        (last["files_total"].as_u64(), last["files_failed"].as_u64()),
        (Some(7), Some(1)),
        "{last}"
    );
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("1 of 7 files failed"),
        "{last}"
    );
}

/// What a prefetch reads goes to nobody: it is no traffic served, no
/// response, no first byte, and no media watched.
#[tokio::test]
async fn a_prefetch_serves_nobody() {
    let origin = Origin::start().await;
    let body = data(300_000, 12);
    origin.add_file("quiet.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let (status, job) = api(
        &spool,
        "POST",
        "/api/prefetch",
        Some(json!({ "url": origin.url("quiet.mp4") })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(follow(&spool, &job).await["state"], "done");
    assert_eq!(origin.stats().body_bytes, body.len() as u64);
    for source in ["cache", "memory", "download", "passthrough", "origin"] {
        let served = common::metric(
            &spool,
            &format!("spool_served_bytes_total{{source=\"{source}\"}}"),
        )
        .await;
        assert_eq!(served, 0.0, "{source}");
    }
    for source in ["cache", "memory", "origin"] {
        let n = common::metric(
            &spool,
            &format!("spool_responses_total{{source=\"{source}\"}}"),
        )
        .await;
        assert_eq!(n, 0.0, "{source}");
    }
    // A player then: its bytes are served, from the cache.
    let (status, _, got) = get(&client(), &spool.url(&origin.url("quiet.mp4")), None).await;
    assert_eq!(status, 200);
    assert!(got == body);
    let served = common::metric(&spool, "spool_served_bytes_total{source=\"cache\"}").await;
    assert_eq!(served, body.len() as f64);
}
