//! The status page in headless Chromium while a slow stream plays: the
//! chunk map in the DOM changes between two looks and shows cached and
//! downloading chunks; a screenshot is kept in
//! `target/players-artifacts/status.png`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::origin::{Faults, Origin};
use crate::common::{cached_chunks, client, data, test_config, wait_for};
use crate::tools::run;

const TOKEN: &str = "status-page-token-0123456";

/// The page as Chromium left it after running its script for a few
/// (virtual) seconds.
async fn dump(url: &str) -> String {
    let out = run(
        "chromium",
        &[
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
    )
    .await;
    String::from_utf8(out.stdout).unwrap()
}

/// The `data-NAME` value of the chunk map of media `id` in a DOM dump.
fn map_attr(dom: &str, id: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("class=\"chunkmap\" data-media=\"{id}\""))?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let key = format!("data-{name}=\"");
    let from = tag.find(&key)? + key.len();
    tag[from..from + tag[from..].find('"')?].parse().ok()
}

/// The chunk map's cells of media `id`, as classes in order.
fn cells(dom: &str, id: &str) -> Vec<String> {
    let Some(at) = dom.find(&format!("class=\"chunkmap\" data-media=\"{id}\"")) else {
        return Vec::new();
    };
    let end = dom[at..].find("</div></div>").map_or(dom.len(), |e| at + e);
    dom[at..end]
        .split("class=\"cell ")
        .skip(1)
        .map(|c| c.split('"').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_live_chunk_map() {
    let origin = Origin::start().await;
    let chunks = 160;
    let body = data(chunks * 64 * 1024, 11);
    origin.add_file("/live.mp4", body.clone(), "video/mp4");
    origin.set_faults("/live.mp4", Faults::throttled(200_000));
    // Beyond loopback with a token: the page gets it from its fragment.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path(), &origin);
    cfg.admin_token = Some(TOKEN.into());
    // Media on loopback; the control plane beyond it, so the page needs
    // the token.
    let media = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let media_addr = media.local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], listener.local_addr().unwrap().port()));
    let server = spool::Server::new(cfg).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = spool::Listeners {
        media,
        admin: Some(listener),
    };
    let task = tokio::spawn(server.serve_on(listeners, async {
        let _ = stopped.await;
    }));
    let c = client();
    wait_for("spool to answer", || async {
        c.get(format!("http://{addr}/health/live"))
            .send()
            .await
            .is_ok()
    })
    .await;
    // A player reading the whole media, at the origin's slow pace.
    let media_url = origin.url("/live.mp4");
    let enc: String = url::form_urlencoded::byte_serialize(media_url.as_bytes()).collect();
    let stream_url = format!("http://{media_addr}/stream?url={enc}");
    let player = tokio::spawn({
        let c = c.clone();
        async move {
            let mut resp = c.get(stream_url).send().await.unwrap();
            let mut n = 0usize;
            while let Some(piece) = resp.chunk().await.unwrap() {
                n += piece.len();
            }
            n
        }
    });
    let dir = tmp.path().to_owned();
    wait_for("a few chunks cached", || async {
        cached_chunks(&dir, &media_url).len() >= 3
    })
    .await;
    let page = format!("http://{addr}/#token={TOKEN}");
    let first = dump(&page).await;
    let id = "1";
    let cached_first = map_attr(&first, id, "cached")
        .unwrap_or_else(|| panic!("no chunk map for media {id} in the page:\n{first}"));
    assert_eq!(map_attr(&first, id, "total"), Some(chunks as u64));
    assert!(
        first.contains("class=\"stream\""),
        "the stream is listed:\n{first}"
    );
    // The media list is a page the server cut: which ones, of how many.
    assert!(first.contains(">1–1 of 1<"), "the page's range:\n{first}");
    // More of the media arrives; a second look sees it.
    wait_for("more chunks cached", || async {
        cached_chunks(&dir, &media_url).len() as u64 >= cached_first + 4
    })
    .await;
    let second = dump(&page).await;
    let cached_second = map_attr(&second, id, "cached").expect("a chunk map");
    assert!(
        cached_second > cached_first,
        "the map grew: {cached_first} then {cached_second} cached chunks"
    );
    let (a, b) = (cells(&first, id), cells(&second, id));
    assert_eq!(a.len(), chunks, "one cell per chunk");
    assert_ne!(a, b, "the cells changed");
    assert!(a.iter().any(|c| c.starts_with("missing")), "{a:?}");
    for (dom, cells) in [(&first, &a), (&second, &b)] {
        assert!(cells.iter().any(|c| c.starts_with("cached")), "{cells:?}");
        assert!(
            cells.iter().any(|c| c.starts_with("downloading")),
            "a chunk is downloading: {cells:?}"
        );
        assert!(
            dom.contains("<p id=\"error\"></p>")
                && !dom.contains("<section id=\"login\" style=\"display: block"),
            "the token from the fragment was taken, and no error shown"
        );
    }
    // The screenshot, kept as an artifact.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/players-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status.png");
    let _ = std::fs::remove_file(&shot);
    run(
        "chromium",
        &[
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            &page,
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // The player was reading all along.
    assert!(!player.is_finished(), "the stream was still playing");
    player.abort();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// A player's position as time: for an MP4 whose duration its header
/// gives, the admin API's stream shows the position and the length in
/// seconds (the page shows them as a clock).
#[tokio::test]
async fn a_stream_shows_its_position_as_time() {
    let origin = Origin::start().await;
    let video = crate::tools::long_video().await;
    let size = std::fs::metadata(&video).unwrap().len();
    origin.add_disk_file("long.mp4", video, "video/mp4");
    // Slow enough that the player is still reading when it is looked at.
    origin.set_faults("long.mp4", Faults::throttled(1_000_000));
    let spool = crate::common::Spool::start_with(&origin, crate::seek::default_sizes).await;
    let url = spool.url(&origin.url("long.mp4"));
    let mut player = client().get(&url).send().await.unwrap();
    let mut read = 0;
    while read < 300_000 {
        read += player.chunk().await.unwrap().unwrap().len();
    }
    let deadline = tokio::time::Instant::now() + crate::common::WAIT_LIMIT;
    let seen = loop {
        let status = format!("{}/api/status", spool.admin());
        let (_, _, body) = crate::common::get(&client(), &status, None).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["streams"][0]["duration_secs"].is_f64() {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no time in {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s = &seen["streams"][0];
    // The file is 60 s long.
    let duration = s["duration_secs"].as_f64().unwrap();
    assert!((59.0..=61.0).contains(&duration), "{s}");
    let pos = s["position_bytes"].as_u64().unwrap() as f64;
    let expected = pos / size as f64 * duration;
    let secs = s["position_secs"].as_f64().unwrap();
    assert!(
        (secs - expected).abs() <= 0.2,
        "{secs} s, expected {expected:.1}: {s}"
    );
    drop(player);
}

/// The status page over a cache of 10,000 media and 200 titles (rows put
/// in the index before spool starts; one more title played for real): it
/// renders a page of titles, searches, opens a title's segments by
/// rendition, pins, and charts what was served. How long the first
/// render and a search took is printed (for the notes, not asserted: the
/// machine's load decides it); screenshots are kept in
/// `target/players-artifacts/status-titles.png` and
/// `status-title-segments.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_browses_a_large_cache() {
    use crate::cdp::Browser;
    let origin = Origin::start().await;
    for (path, body) in [
        ("real/index.m3u8", bytes::Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n#EXT-X-ENDLIST\n")),
        ("real/a.ts", data(300_000, 1)),
        ("real/b.ts", data(200_000, 2)),
    ] {
        origin.add_file(path, body, "video/mp2t");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(tmp.path(), &origin);
    // The index made by a first start, then filled.
    let spool = crate::common::Spool::start_cfg(cfg.clone()).await;
    drop(spool.stop().await);
    {
        let mut c = rusqlite::Connection::open(tmp.path().join("index.db")).unwrap();
        let tx = c.transaction().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for i in 0..10_000i64 {
            tx.execute(
                "INSERT INTO media (url, size_bytes, chunk_size_bytes, accepts_ranges, probed_unix, last_access_unix)
                 VALUES (?1, ?2, 65536, 1, 0, ?3)",
                rusqlite::params![format!("http://films.lan/library/film-{i:05}.mkv"), 1_000_000 + i * 1000, now - i / 10],
            )
            .unwrap();
        }
        for t in 0..200i64 {
            tx.execute(
                "INSERT INTO titles (url, kind, duration_secs, renditions, created_unix, last_access_unix)
                 VALUES (?1, 'hls', 1800, 3, ?2, ?2)",
                rusqlite::params![format!("http://shows.lan/title-{t:04}/master.m3u8"), now - t],
            )
            .unwrap();
            let id = tx.last_insert_rowid();
            for p in 0..20i64 {
                // The titles' segments are media among the 10,000.
                tx.execute(
                    "INSERT INTO title_parts (url, title_id, role, stream) VALUES (?1, ?2, 'segment', ?3)",
                    rusqlite::params![
                        format!("http://films.lan/library/film-{:05}.mkv", t * 20 + p),
                        id,
                        format!("http://shows.lan/title-{t:04}/v{}/index.m3u8", p % 2)
                    ],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let spool = crate::common::Spool::start_cfg(cfg).await;
    // One title played for real: its segments cached, served bytes to chart.
    let playlist = spool.url(&origin.url("real/index.m3u8"));
    let (status, _, body) = crate::common::get(&client(), &playlist, None).await;
    assert_eq!(status, 200);
    for uri in String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let (status, _, _) =
            crate::common::get(&client(), &format!("{}{uri}", spool.base()), None).await;
        assert_eq!(status, 200);
    }
    for f in ["real/a.ts", "real/b.ts"] {
        crate::common::wait_until_cached(tmp.path(), &origin.url(f)).await;
    }
    // Served bytes are sampled at each disk check.
    wait_for("the traffic sampled", || async {
        let (_, _, b) =
            crate::common::get(&client(), &format!("{}/api/traffic", spool.admin()), None).await;
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        // Both segments (the playlist is not a media's bytes).
        let origin: u64 = v["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["origin_bytes"].as_u64())
            .sum();
        origin >= 500_000
    })
    .await;

    let browser = Browser::launch_with("status-titles", &["--window-size=1280,1500"]).await;
    browser.navigate(&format!("{}/", spool.admin())).await;
    let rendered = "Number(document.body.dataset.refreshed || 0)";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while browser.evaluate(rendered).await.as_u64() < Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never rendered: {:?}",
            browser.console()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = browser
        .evaluate("window.spoolTimings.first")
        .await
        .as_f64()
        .unwrap();
    let range = browser
        .evaluate("document.getElementById('media-range').textContent")
        .await;
    // 10,000 media, 4,000 of them the titles' segments; 200 titles and
    // the one played.
    assert_eq!(range, "1–20 of 6201", "the page's range");
    browser.screenshot("status-titles").await;
    let top = browser
        .evaluate("document.querySelector('#media .title .url').textContent")
        .await;
    assert!(
        top.as_str().unwrap().ends_with("real/index.m3u8"),
        "the title played last is first: {top}"
    );

    // A search: typed, then the page asks again after a 200 ms pause.
    let searched = browser
        .evaluate(
            "(async () => {
               const t0 = performance.now();
               const box = document.getElementById('media-search');
               box.value = 'title-0137';
               box.dispatchEvent(new Event('input'));
               while (!(document.getElementById('media-range').textContent === '1–1 of 1'
                        && document.querySelector('#media .title .url').textContent.includes('title-0137'))) {
                 await new Promise(r => setTimeout(r, 5));
               }
               return performance.now() - t0;
             })()",
        )
        .await
        .as_f64()
        .unwrap();
    let facts = browser
        .evaluate("document.querySelector('#media .title .muted').textContent")
        .await;
    assert!(
        facts
            .as_str()
            .unwrap()
            .contains("3 renditions · 0/20 files · 30:00"),
        "{facts}"
    );
    println!(
        "status page over 10,000 media and 200 titles: first render {first:.0} ms after navigation, \
         a search result {searched:.0} ms after typing (200 ms of it the page's typing pause)"
    );

    // The played title: pinned, then its segments by rendition.
    browser
        .evaluate(
            "(async () => {
               const box = document.getElementById('media-search');
               box.value = 'real'; box.dispatchEvent(new Event('input'));
               while (!document.querySelector('#media .title .url')?.textContent.includes('real/index.m3u8'))
                 await new Promise(r => setTimeout(r, 5));
               document.querySelector('#media .title button.pin').click();
               while (!document.querySelector('#media .title .kind.pinned'))
                 await new Promise(r => setTimeout(r, 5));
               [...document.querySelectorAll('#media .title button')].find(b => b.textContent === 'segments').click();
               while (!document.querySelector('.stream-parts .chunkmap'))
                 await new Promise(r => setTimeout(r, 5));
             })()",
        )
        .await;
    let map = browser
        .evaluate("(() => { const m = document.querySelector('.stream-parts .chunkmap'); return [m.dataset.cached, m.dataset.total, m.querySelectorAll('.cell.cached').length]; })()")
        .await;
    assert_eq!(
        map,
        serde_json::json!(["2", "2", 2]),
        "both segments cached"
    );
    let (_, _, b) = crate::common::get(
        &client(),
        &format!("{}/api/titles?q=real", spool.admin()),
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["titles"][0]["pinned"], true, "{v}");
    // The chart: bars, and what they add up to.
    let chart = browser
        .evaluate("(() => { const s = document.getElementById('traffic'); return [s.querySelectorAll('rect').length, Number(s.dataset.origin)]; })()")
        .await;
    assert!(
        chart[0].as_u64() > Some(0) && chart[1].as_u64() >= Some(500_000),
        "{chart}"
    );
    let shot = browser.screenshot("status-title-segments").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    let errors: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|l| l.contains("rror"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
