//! HLS and DASH in headless Chromium through spool, with the web players a
//! site would use (hls.js, dash.js) and with Chromium's own HLS playback:
//! ffmpeg-made VOD (played, seeked, and replayed warm at no cost to the
//! origin), a live sliding window while ffmpeg writes it, a DASH stream, and
//! a signed directory link.
//!
//! The page and the player libraries come from their own origin (the
//! "site"), so spool is another origin for the page (CORS) and the media
//! origin's counters see media only.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::cdp::Browser;
use crate::common::{origin::Origin, wait_until_cached, Spool};
use crate::tools::{make_dash, make_hls_vod, serve_dir, web_player, LiveHls, DASH_JS, HLS_JS};

/// A key makes unsigned links limited to the allowlist (the test origins'
/// address), and those carry CORS headers.
const SECRET: &str = "players-test-secret-0123456789";

const PAGE: &str = "<!doctype html><html><head><title>spool players</title>\
    <link rel=\"icon\" href=\"data:,\">\
    <script src=\"hls.min.js\"></script><script src=\"dash.all.min.js\"></script>\
    <style>video { width: 320px; height: 240px; }</style></head><body></body></html>";

/// Starts the site: an origin serving the page with hls.js and dash.js;
/// returns it (kept alive by the caller) and the page's URL.
async fn site() -> (Origin, String) {
    let site = Origin::start().await;
    site.add_file(
        "page.html",
        bytes::Bytes::from_static(PAGE.as_bytes()),
        "text/html; charset=utf-8",
    );
    site.add_disk_file("hls.min.js", web_player(HLS_JS), "text/javascript");
    site.add_disk_file("dash.all.min.js", web_player(DASH_JS), "text/javascript");
    let page = site.url("page.html");
    (site, page)
}

/// JS helpers of every script. `failures` collects fatal player errors;
/// `until` polls a condition for at most `ms`, throwing on a failure, a
/// MediaError or the deadline with the element's state; `reach` waits for
/// playback past a time, `seek` for a seek to land there; `resources` is
/// every URL the page fetched.
const HARNESS: &str = r#"
    const failures = [];
    const sleep = (ms) => new Promise(r => setTimeout(r, ms));
    const ranges = (b) => Array.from({ length: b.length },
        (_, i) => `${b.start(i).toFixed(1)}-${b.end(i).toFixed(1)}`).join(' ');
    const state = (v) => `currentTime ${v.currentTime.toFixed(2)}, readyState ${v.readyState}, ` +
        `paused ${v.paused}, seeking ${v.seeking}, buffered [${ranges(v.buffered)}]`;
    const until = async (v, what, cond, ms = 15000) => {
        const deadline = performance.now() + ms;
        while (!cond()) {
            if (failures.length) throw new Error(`${what}: ${failures.join('; ')} (${state(v)})`);
            if (v.error) throw new Error(`${what}: MediaError ${v.error.code}: ${v.error.message}`);
            if (performance.now() > deadline) throw new Error(`no ${what} within ${ms} ms (${state(v)})`);
            await sleep(50);
        }
    };
    const reach = (v, t) => until(v, `playback past ${t} s`, () => v.currentTime > t && !v.paused);
    const seek = async (v, t) => {
        v.currentTime = t;
        await until(v, `a seek to ${t} s`, () => !v.seeking && Math.abs(v.currentTime - t) < 1);
    };
    const video = () => {
        const v = document.createElement('video');
        v.muted = true;
        v.crossOrigin = 'anonymous';
        document.body.appendChild(v);
        return v;
    };
    const resources = () => performance.getEntriesByType('resource').map(e => e.name);
"#;

/// What the VOD scripts do once the stream plays (12 s, 2 s segments):
/// play past 2 s, seek beyond the buffer to 9 s and play on, seek back to
/// 3 s and play past 6.5 s. Every segment is fetched on the way.
const VOD_PLAN: &str = r#"
    await reach(v, 2);
    await seek(v, 9);
    await reach(v, 10);
    await seek(v, 3);
    await reach(v, 6.5);
"#;

/// JS: hls.js plays `src` into a `<video>`, then runs `plan` (statements
/// on `v`, the video, and `hls`) and pauses; resolves to the fragments
/// loaded and the page's resources. A small buffer makes seeks fetch.
fn hls_js_script(src: &str, plan: &str) -> String {
    format!(
        r#"(async () => {{
            {HARNESS}
            if (!Hls.isSupported()) throw new Error('hls.js: no MediaSource here');
            const v = video();
            const hls = new Hls({{ maxBufferLength: 2, maxMaxBufferLength: 4 }});
            hls.on(Hls.Events.ERROR, (_, d) => {{
                const m = `hls.js ${{d.fatal ? 'fatal ' : ''}}error: ${{d.type}} ${{d.details}} ` +
                    `${{d.response ? d.response.code : ''}} ${{d.url || (d.frag && d.frag.url) || ''}}`;
                console.warn(m);
                if (d.fatal) failures.push(m);
            }});
            const frags = [];
            let levelLoads = 0, live = null;
            hls.on(Hls.Events.FRAG_LOADED, (_, d) => frags.push(d.frag.sn));
            hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {{ levelLoads++; live = d.details.live; }});
            hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {{}}));
            hls.loadSource({src});
            hls.attachMedia(v);
            {plan}
            // Stopped, not torn down: the page shows the last frame.
            v.pause();
            hls.stopLoad();
            return {{ frags, levelLoads, live, resources: resources() }};
        }})()"#,
        src = Value::from(src),
    )
}

/// JS: dash.js plays `src`, then runs `plan` and pauses; resolves to the
/// page's resources.
fn dash_js_script(src: &str, plan: &str) -> String {
    format!(
        r#"(async () => {{
            {HARNESS}
            const v = video();
            const player = dashjs.MediaPlayer().create();
            player.updateSettings({{ debug: {{ logLevel: dashjs.Debug.LOG_LEVEL_WARNING }} }});
            const events = dashjs.MediaPlayer.events;
            player.on(events.ERROR, (e) => {{
                const m = `dash.js error ${{e.error && e.error.code}}: ${{e.error && e.error.message}}`;
                console.warn(m);
                failures.push(m);
            }});
            player.on(events.PLAYBACK_ERROR, (e) => failures.push(`dash.js playback error: ${{e.error}}`));
            player.initialize(v, {src}, true);
            {plan}
            v.pause();
            return {{ resources: resources() }};
        }})()"#,
        src = Value::from(src),
    )
}

/// JS: Chromium itself plays `src` in `<video crossorigin src>`, then runs
/// `plan` and pauses; resolves to what `canPlayType` said.
fn native_script(src: &str, plan: &str) -> String {
    format!(
        r#"(async () => {{
            {HARNESS}
            const v = video();
            const can = v.canPlayType('application/vnd.apple.mpegurl');
            if (!can) throw new Error('this Chromium has no HLS playback of its own');
            v.src = {src};
            v.play().catch(() => {{}});
            {plan}
            v.pause();
            return {{ canPlayType: can, resources: resources() }};
        }})()"#,
        src = Value::from(src),
    )
}

/// The URLs of `r["resources"]` ending in `ext`.
fn fetched(r: &Value, ext: &str) -> Vec<String> {
    r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
        .filter(|u| u.split('?').next().unwrap_or(u).ends_with(ext))
        .map(str::to_owned)
        .collect()
}

/// Asserts that every segment the page fetched came from spool.
fn all_through(r: &Value, ext: &str, spool: &Spool, what: &str) -> usize {
    let urls = fetched(r, ext);
    assert!(!urls.is_empty(), "{what}: no {ext} segment fetched: {r}");
    let base = format!("{}/", spool.base());
    let elsewhere: Vec<_> = urls.iter().filter(|u| !u.starts_with(&base)).collect();
    assert!(
        elsewhere.is_empty(),
        "{what}: segments fetched around spool: {elsewhere:?}"
    );
    urls.len()
}

#[tokio::test]
async fn hls_js_plays_and_seeks_a_vod_through_spool_and_replays_it_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    make_hls_vod(dir.path(), 12).await;
    let origin = Origin::start().await;
    let media = serve_dir(&origin, dir.path(), "vod");
    assert!(media.len() >= 6, "{media:?}");
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let src = spool.url(&origin.url("vod/index.m3u8"));
    let browser = Browser::launch("hls-js-vod").await;
    // Every request reaches spool: Chromium's cache must not answer the
    // replay.
    browser.disable_cache().await;

    browser.navigate(&page).await;
    let cold = browser.evaluate(&hls_js_script(&src, VOD_PLAN)).await;
    all_through(&cold, ".ts", &spool, "cold play");
    browser.screenshot("hls-js-vod").await;
    for m in &media {
        wait_until_cached(&spool.cache_dir, &origin.url(m)).await;
    }

    // A second page load plays the same way from spool's cache.
    origin.reset_stats();
    browser.navigate(&page).await;
    let warm = browser.evaluate(&hls_js_script(&src, VOD_PLAN)).await;
    let segments = all_through(&warm, ".ts", &spool, "warm replay");
    // Not a request, not a byte (the playlist is cached too).
    let cost: Vec<_> = origin
        .requests_log()
        .into_iter()
        .map(|r| (r.path, r.status, r.body_bytes))
        .collect();
    assert!(
        cost.is_empty() && origin.stats().body_bytes == 0,
        "a warm replay ({segments} segments) costs the origin nothing: {cost:?}"
    );
}

/// Offline: a VOD hls.js played once through spool plays and seeks again
/// after spool restarts on its cache with the origin answering nothing but
/// 503: the playlist from the index, every segment from the cache.
#[tokio::test]
async fn hls_js_replays_a_vod_offline_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    make_hls_vod(dir.path(), 12).await;
    let origin = Origin::start().await;
    let media = serve_dir(&origin, dir.path(), "vod");
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let browser = Browser::launch("hls-js-offline").await;
    browser.disable_cache().await;
    browser.navigate(&page).await;
    let src = spool.url(&origin.url("vod/index.m3u8"));
    browser.evaluate(&hls_js_script(&src, VOD_PLAN)).await;
    for m in &media {
        wait_until_cached(&spool.cache_dir, &origin.url(m)).await;
    }
    let (cache_dir, _keep) = spool.stop().await;
    let down = crate::common::origin::Faults {
        status: Some(503),
        ..Default::default()
    };
    for name in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = name.file_name().into_string().unwrap();
        origin.set_faults(&format!("vod/{name}"), down.clone());
    }
    origin.reset_stats();
    let mut cfg = crate::common::test_config(&cache_dir, &origin);
    cfg.signing.secret = Some(SECRET.into());
    let spool = Spool::start_cfg(cfg).await;
    let src = spool.url(&origin.url("vod/index.m3u8"));
    browser.navigate(&page).await;
    let offline = browser.evaluate(&hls_js_script(&src, VOD_PLAN)).await;
    let segments = all_through(&offline, ".ts", &spool, "offline replay");
    let asked: Vec<_> = origin
        .requests_log()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert!(
        asked.iter().all(|(p, s)| p.ends_with(".m3u8") && *s == 503),
        "with the origin down only the playlist is asked for (and answered from the index): {asked:?}"
    );
    assert!(segments >= 6, "{offline}");
}

#[tokio::test]
async fn chromium_plays_and_seeks_a_vod_through_spool_natively() {
    let dir = tempfile::tempdir().unwrap();
    make_hls_vod(dir.path(), 12).await;
    let origin = Origin::start().await;
    serve_dir(&origin, dir.path(), "vod");
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let src = spool.url(&origin.url("vod/index.m3u8"));
    let browser = Browser::launch("hls-native").await;
    browser.navigate(&page).await;
    let r = browser.evaluate(&native_script(&src, VOD_PLAN)).await;
    browser.screenshot("hls-native").await;
    eprintln!(
        "canPlayType(application/vnd.apple.mpegurl): {}",
        r["canPlayType"]
    );
    let segments = origin
        .requests_log()
        .iter()
        .filter(|r| r.path.ends_with(".ts"))
        .map(|r| r.path.clone())
        .collect::<BTreeSet<_>>();
    assert!(segments.len() >= 6, "segments through spool: {segments:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_live_sliding_window_through_spool() {
    let origin = Origin::start().await;
    let mut live = LiveHls::start(&origin, 60).await;
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let src = spool.url(&origin.url(LiveHls::PLAYLIST));
    let browser = Browser::launch("hls-js-live").await;
    browser.navigate(&page).await;
    // Four seconds of play from where it started: the window (4 segments
    // of 1 s) slides under it.
    let plan = r#"
        await until(v, 'playing', () => v.currentTime > 0 && !v.paused, 20000);
        const t0 = v.currentTime;
        await until(v, 'four seconds of play', () => v.currentTime > t0 + 4, 20000);
    "#;
    let r = browser.evaluate(&hls_js_script(&src, plan)).await;
    browser.screenshot("hls-js-live").await;
    assert!(
        live.still_live(),
        "the stream was live while the page played"
    );
    assert_eq!(r["live"], true, "hls.js saw a live playlist: {r}");
    assert!(
        r["levelLoads"].as_u64().unwrap() >= 3,
        "hls.js reloaded the playlist: {r}"
    );
    let sns: Vec<u64> = r["frags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let (lo, hi) = (sns.iter().min(), sns.iter().max());
    assert!(
        matches!((lo, hi), (Some(lo), Some(hi)) if hi - lo >= 4),
        "segments from a later window than the first one: {sns:?}"
    );
    all_through(&r, ".ts", &spool, "live play");
}

#[tokio::test]
async fn dash_js_plays_and_seeks_dash_through_spool() {
    let dir = tempfile::tempdir().unwrap();
    make_dash(dir.path(), 10).await;
    let origin = Origin::start().await;
    serve_dir(&origin, dir.path(), "dash");
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let src = spool.url(&origin.url("dash/manifest.mpd"));
    let browser = Browser::launch("dash-js").await;
    browser.navigate(&page).await;
    let plan = r#"
        await reach(v, 2);
        await seek(v, 7);
        await reach(v, 8);
    "#;
    let r = browser.evaluate(&dash_js_script(&src, plan)).await;
    browser.screenshot("dash-js").await;
    all_through(&r, ".m4s", &spool, "DASH play");
}

#[tokio::test]
async fn hls_js_plays_a_signed_directory_link() {
    let dir = tempfile::tempdir().unwrap();
    make_hls_vod(dir.path(), 6).await;
    let origin = Origin::start().await;
    serve_dir(&origin, dir.path(), "vod");
    let (_site, page) = site().await;
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    // What `spool sign --directory` prints for the playlist.
    let key = spool::signing::Key::from_secret(SECRET.as_bytes()).unwrap();
    let link = spool::signing::link_scoped(
        &spool.base(),
        &key,
        &url::Url::parse(&origin.url("vod/index.m3u8")).unwrap(),
        spool::signing::Expiry(None),
        spool::signing::Scope::Dir,
    )
    .unwrap();
    let browser = Browser::launch("hls-js-signed").await;
    browser.navigate(&page).await;
    let plan = "await reach(v, 2); await seek(v, 4); await reach(v, 4.5);";
    let r = browser.evaluate(&hls_js_script(&link, plan)).await;
    browser.screenshot("hls-js-signed").await;
    all_through(&r, ".ts", &spool, "signed link");
    let signed = format!("{}/s/", spool.base());
    let unsigned: Vec<_> = fetched(&r, ".ts")
        .into_iter()
        .filter(|u| !u.starts_with(&signed))
        .collect();
    assert!(
        unsigned.is_empty(),
        "segments of a signed playlist are signed links: {unsigned:?}"
    );
}
