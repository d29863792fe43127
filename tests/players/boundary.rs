//! Headless Chromium against spool's trust boundary: an HTML or SVG file
//! an upstream serves, opened through spool, runs no script; a page on
//! another origin can neither read nor change anything on the control
//! plane; a page on a name rebound to the control plane's address, or to
//! an open spool's media listener, gets nothing; and a video opened in a
//! tab still plays (the sandboxing policy leaves media documents alone).

use serde_json::Value;

use crate::cdp::Browser;
use crate::common::origin::Origin;
use crate::common::Spool;
use crate::tools::make_video;

/// A page that, if its script ran as spool, would read the admin API,
/// pause caching and sign a link, and says so in its title.
const EVIL_HTML: &str = r#"<!doctype html><html><head><title>inert</title></head><body>
<script>
document.title = 'script ran';
fetch('/api/status').then(r => r.text()).then(t => document.title = 'read: ' + t.slice(0, 40));
fetch('/api/caching/pause', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
</script></body></html>"#;

const EVIL_SVG: &str = r#"<svg xmlns="http://www.w3.org/2000/svg"><title>inert</title>
<script>document.title = 'script ran';
fetch('/api/caching/pause', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
</script></svg>"#;

/// The page's title, or what Chromium could not open.
async fn title_after_opening(browser: &Browser, url: &str) -> String {
    match browser.open(url).await {
        Some(err) => format!("not opened: {err}"),
        None => {
            // Give a script that would run a moment to do so.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            browser.evaluate("document.title").await.to_string()
        }
    }
}

#[tokio::test]
async fn proxied_pages_run_no_script_as_spool() {
    let origin = Origin::start().await;
    origin.add_file(
        "evil.html",
        bytes::Bytes::from_static(EVIL_HTML.as_bytes()),
        "text/html; charset=utf-8",
    );
    origin.add_file(
        "evil.svg",
        bytes::Bytes::from_static(EVIL_SVG.as_bytes()),
        "image/svg+xml",
    );
    // Served with no type at all: never sniffed into HTML.
    origin.add_file(
        "evil.bin",
        bytes::Bytes::from_static(EVIL_HTML.as_bytes()),
        "",
    );
    // The worst case: an open spool on loopback, whose loopback clients
    // (this browser) are admins of its control plane; both as downloads
    // (the default) and inline.
    for inline in [false, true] {
        let spool = Spool::start_with(&origin, |c| c.inline_documents = inline).await;
        let browser = Browser::launch(&format!("boundary-inert-{inline}")).await;
        for name in ["evil.html", "evil.svg", "evil.bin"] {
            let title = title_after_opening(&browser, &spool.url(&origin.url(name))).await;
            assert!(
                !title.contains("script ran") && !title.contains("read:"),
                "{name} (inline {inline}): {title}\n{}",
                browser.console().join("\n")
            );
        }
        assert!(spool.server.is_caching(), "nothing paused caching");
        browser
            .screenshot(&format!("boundary-inert-{inline}"))
            .await;
    }
}

#[tokio::test]
async fn another_origin_cannot_drive_the_control_plane() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.signing.secret = Some("players-boundary-secret-0123456789".into())
    })
    .await;
    let admin = spool.admin();
    let page = r#"<!doctype html><html><head><title>attacker</title></head><body></body></html>"#;
    origin.add_file(
        "attack.html",
        bytes::Bytes::from_static(page.as_bytes()),
        "text/html",
    );
    let browser = Browser::launch_with(
        "boundary-attacker",
        &["--host-resolver-rules=MAP rebound.test 127.0.0.1"],
    )
    .await;
    browser.navigate(&origin.url("attack.html")).await;
    // Every way a page can try: reads (CORS keeps them from the page),
    // JSON writes (their preflight is refused), simple writes (wrong type
    // and a foreign Origin), a form post, sign.
    let script = format!(
        r#"(async () => {{
            const admin = {admin};
            const out = {{}};
            const attempt = async (name, f) => {{
                try {{ out[name] = await f(); }} catch (e) {{ out[name] = 'blocked: ' + e.message; }}
            }};
            await attempt('read', async () => (await fetch(admin + '/api/status')).text());
            await attempt('metrics', async () => (await fetch(admin + '/metrics')).text());
            await attempt('json_pause', async () => (await fetch(admin + '/api/caching/pause', {{
                method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{}}' }})).status);
            await attempt('simple_pause', async () => (await fetch(admin + '/api/caching/pause', {{
                method: 'POST', mode: 'no-cors', headers: {{'Content-Type': 'text/plain'}}, body: '{{}}' }})).type);
            await attempt('simple_sign', async () => (await fetch(admin + '/sign', {{
                method: 'POST', mode: 'no-cors', body: '{{"url":"http://example.com/a.mp4"}}' }})).type);
            await attempt('delete', async () => (await fetch(admin + '/api/media/1', {{ method: 'DELETE' }})).status);
            const f = document.createElement('form');
            f.method = 'POST'; f.action = admin + '/api/caching/pause'; f.enctype = 'text/plain';
            f.target = 'sink';
            const sink = document.createElement('iframe'); sink.name = 'sink';
            document.body.append(sink, f);
            f.submit();
            await new Promise(r => setTimeout(r, 1000));
            return out;
        }})()"#,
        admin = Value::from(admin.clone()),
    );
    let out = browser.evaluate(&script).await;
    for key in ["read", "metrics", "json_pause", "delete"] {
        let v = out[key].as_str().unwrap_or("");
        assert!(v.starts_with("blocked"), "{key}: {out}");
    }
    assert!(spool.server.is_caching(), "caching was not paused: {out}");
    // After a DNS rebinding the attacker's page is same-origin with the
    // control plane, under its own name: every answer is 403.
    let port = spool.admin_addr.unwrap().port();
    let rebound = format!("http://rebound.test:{port}/");
    assert!(browser.open(&rebound).await.is_none());
    let got = browser
        .evaluate(
            r#"(async () => {
                const s = await fetch('/api/status');
                const p = await fetch('/api/caching/pause', {method: 'POST',
                    headers: {'Content-Type': 'application/json'}, body: '{}'});
                return [s.status, await s.text(), p.status, document.body.innerText];
            })()"#,
        )
        .await;
    assert_eq!(
        (got[0].as_u64(), got[2].as_u64()),
        (Some(403), Some(403)),
        "{got}"
    );
    assert!(
        got[1].as_str().unwrap().contains("not this control plane"),
        "{got}"
    );
    assert!(spool.server.is_caching());
    // The status page itself, at its own address, works.
    browser.navigate(&format!("{admin}/")).await;
    let status = browser
        .evaluate("(async () => (await fetch('/api/status')).status)()")
        .await;
    assert_eq!(status, 200);
}

/// A page whose name was rebound to 127.0.0.1 (DNS rebinding) reaches an
/// open spool's media listener (loopback, no key) under its own name:
/// Chromium sends that name as Host, and spool answers 421 and fetches
/// nothing, so the page, same-origin with that name, cannot read through
/// spool what spool may reach. (Here the page is on the origin's port, so
/// it fetches without CORS; the same fetch to spool's address does reach
/// the upstream.)
#[tokio::test]
async fn a_rebound_page_cannot_use_an_open_spool() {
    let origin = Origin::start().await;
    origin.add_file(
        "private.txt",
        bytes::Bytes::from_static(b"only for this machine"),
        "text/plain",
    );
    let page = r#"<!doctype html><html><head><title>rebound</title></head><body></body></html>"#;
    origin.add_file(
        "rebound.html",
        bytes::Bytes::from_static(page.as_bytes()),
        "text/html",
    );
    let spool = Spool::start(&origin).await;
    let browser = Browser::launch_with(
        "boundary-rebound-media",
        &["--host-resolver-rules=MAP rebound.test 127.0.0.1"],
    )
    .await;
    let private = origin.url("private.txt");
    let fetches = || {
        origin
            .requests_log()
            .iter()
            .filter(|r| r.path.contains("private.txt"))
            .count()
    };
    let fetch = |base: String| {
        format!(
            r#"(async () => {{
                await fetch({base} + '/stream?url=' + encodeURIComponent({target}), {{mode: 'no-cors'}});
                return 'sent';
            }})()"#,
            base = Value::from(base),
            target = Value::from(private.clone()),
        )
    };
    browser
        .navigate(&format!(
            "http://rebound.test:{}/rebound.html",
            origin.addr().port()
        ))
        .await;
    let port = spool.addr.port();
    let got = browser
        .evaluate(&fetch(format!("http://rebound.test:{port}")))
        .await;
    assert_eq!(got, "sent");
    assert_eq!(
        fetches(),
        0,
        "a rebound name's request reached the upstream"
    );
    let got = browser.evaluate(&fetch(spool.base())).await;
    assert_eq!(got, "sent");
    crate::common::wait_for("spool's own address to fetch", || async { fetches() > 0 }).await;
}

#[tokio::test]
async fn a_video_opened_in_a_tab_still_plays() {
    let dir = tempfile::tempdir().unwrap();
    let file = make_video(
        dir.path(),
        "tab.mp4",
        4,
        &["-c:v", "libx264", "-c:a", "aac", "-movflags", "+faststart"],
    )
    .await;
    let origin = Origin::start().await;
    origin.add_disk_file("tab.mp4", file, "video/mp4");
    let spool = Spool::start(&origin).await;
    let browser = Browser::launch("boundary-tab").await;
    let url = spool.url(&origin.url("tab.mp4"));
    assert_eq!(browser.open(&url).await, None);
    let got = browser
        .evaluate(
            r#"(async () => {
                const v = document.querySelector('video');
                if (!v) return 'no video element';
                v.muted = true;
                v.play().catch(() => {});
                const deadline = performance.now() + 20000;
                while (v.currentTime <= 0.5) {
                    if (v.error) return `MediaError ${v.error.code}: ${v.error.message}`;
                    if (performance.now() > deadline) return `stuck at ${v.currentTime}`;
                    await new Promise(r => setTimeout(r, 50));
                }
                return 'played';
            })()"#,
        )
        .await;
    assert_eq!(got, "played", "{}", browser.console().join("\n"));
}
