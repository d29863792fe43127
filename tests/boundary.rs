//! Proxied bytes never act as spool: the control plane is a listener of
//! its own that refuses foreign Hosts and cross-site state changes, and
//! every media answer is inert in a browser. Over real HTTP, against a
//! real origin on loopback.

mod common;

use common::origin::Origin;
use common::{client, data, get, header, Spool};
use serde_json::{json, Value};

const TOKEN: &str = "boundary-admin-token-0123";

/// One request to the control plane: method, path, extra headers.
async fn call(spool: &Spool, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{}{path}", spool.admin()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == "POST" {
        req = req.header("content-type", "application/json").body("{}");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// A rebinding page sends its own name as Host: every control plane
/// endpoint refuses it, also to a loopback client that is an admin, also
/// with the token.
#[tokio::test]
async fn a_foreign_host_is_refused_everywhere() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| c.admin_token = Some(TOKEN.into())).await;
    let bearer = format!("Bearer {TOKEN}");
    for host in [
        "attacker.example",
        "attacker.example:8081",
        "127.0.0.1.nip.io",
    ] {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/api/status"),
            ("GET", "/api/media"),
            ("GET", "/metrics"),
            ("POST", "/api/caching/pause"),
            ("POST", "/sign"),
        ] {
            let (status, v) = call(&spool, method, path, &[("host", host)]).await;
            assert_eq!(status, 403, "{method} {path} Host {host}: {v}");
            assert!(v["error"].as_str().unwrap().contains("Host"), "{v}");
            let (status, _) = call(
                &spool,
                method,
                path,
                &[("host", host), ("authorization", &bearer)],
            )
            .await;
            assert_eq!(status, 403, "{method} {path} Host {host} with the token");
        }
    }
    // Caching was never paused by any of them.
    assert!(spool.server.is_caching());
    // Its own address and localhost are fine.
    let port = spool.admin_addr.unwrap().port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, v) = call(&spool, "GET", "/api/status", &[("host", &host)]).await;
        assert_eq!(status, 200, "{host}: {v}");
    }
}

/// `--admin-host` names extra Hosts (a reverse proxy's name) and origins.
#[tokio::test]
async fn admin_host_names_are_accepted() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| c.admin_host = vec!["Spool.LAN".into()]).await;
    let (status, v) = call(&spool, "GET", "/api/status", &[("host", "spool.lan")]).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(
        &spool,
        "POST",
        "/api/caching/pause",
        &[("host", "spool.lan"), ("origin", "https://spool.lan")],
    )
    .await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
}

/// A page on another origin cannot change anything, even where its
/// request needs no credential (a loopback browser, loopback trusted):
/// pause, resume, delete, prefetch and sign all refuse its Origin. The
/// control plane's own origin (the status page) and a command line
/// client (no Origin) may.
#[tokio::test]
async fn cross_site_state_changes_are_refused() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.signing.secret = Some("boundary-secret-0123456789abcdef".into())
    })
    .await;
    for evil in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        for (method, path) in [
            ("POST", "/api/caching/pause"),
            ("POST", "/api/prefetch"),
            ("DELETE", "/api/media/1"),
            ("DELETE", "/api/prefetch/1"),
            ("POST", "/sign"),
        ] {
            let (status, v) = call(&spool, method, path, &[("origin", evil)]).await;
            assert_eq!(status, 403, "{method} {path} from {evil}: {v}");
            assert!(v["error"].as_str().unwrap().contains("origin"), "{v}");
        }
    }
    assert!(spool.server.is_caching(), "nothing was paused");
    let own = spool.admin();
    let (status, v) = call(&spool, "POST", "/api/caching/pause", &[("origin", &own)]).await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
    let (status, v) = call(&spool, "POST", "/api/caching/resume", &[]).await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
    // Reads from another origin are answered (the browser keeps the answer
    // from the page: no CORS header is ever sent).
    let r = client()
        .get(format!("{own}/api/status"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// Every media answer is inert: nosniff and a sandboxing policy on all of
/// them; HTML, SVG and XML come as downloads unless the setting keeps
/// them inline; media types play as before.
#[tokio::test]
async fn media_answers_are_inert() {
    let origin = Origin::start().await;
    let page = b"<html><script>fetch('/api/status')</script></html>".to_vec();
    origin.add_file("page.html", page.clone().into(), "text/html; charset=utf-8");
    origin.add_file(
        "pic.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec().into(),
        "image/svg+xml",
    );
    origin.add_file(
        "feed.xml",
        b"<?xml version='1.0'?><a/>".to_vec().into(),
        "application/xml",
    );
    origin.add_file("movie.mp4", data(100_000, 3), "video/mp4");
    origin.add_file("untyped", b"<html><script>1</script>".to_vec().into(), "");
    let spool = Spool::start(&origin).await;
    let c = client();
    for (name, download) in [
        ("page.html", true),
        ("pic.svg", true),
        ("feed.xml", true),
        ("movie.mp4", false),
        ("untyped", false),
    ] {
        let url = spool.url(&origin.url(name));
        for range in [None, Some("bytes=0-9")] {
            let (status, h, body) = get(&c, &url, range).await;
            assert!(status == 200 || status == 206, "{name}: {status}");
            assert!(!body.is_empty());
            assert_eq!(header(&h, "x-content-type-options"), "nosniff", "{name}");
            let csp = header(&h, "content-security-policy");
            assert!(
                csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
                "{name}: {csp}"
            );
            let disposition = header(&h, "content-disposition");
            assert_eq!(
                disposition == "attachment",
                download,
                "{name}: {disposition:?}"
            );
        }
    }
    // The path form and errors are inert too.
    let (status, h, _) = get(&c, &format!("{}/p/nonsense/x", spool.base()), None).await;
    assert_eq!(status, 400);
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    // The setting serves them inline, still sandboxed.
    let inline = Spool::start_with(&origin, |c| c.inline_documents = true).await;
    let (_, h, body) = get(&c, &inline.url(&origin.url("page.html")), None).await;
    assert_eq!(body, page);
    assert_eq!(header(&h, "content-disposition"), "");
    assert!(header(&h, "content-security-policy").starts_with("sandbox;"));
}

/// With the control plane off, nothing of it answers anywhere, and media
/// still plays.
#[tokio::test]
async fn the_control_plane_can_be_off() {
    let origin = Origin::start().await;
    let body = data(50_000, 5);
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.admin_listen = spool::config::OptionalAddr(None)
    })
    .await;
    assert!(spool.admin_addr.is_none());
    let c = client();
    assert_eq!(
        get(&c, &spool.url(&origin.url("a.mp4")), None).await.2,
        body
    );
    for path in ["/", "/api/status", "/metrics"] {
        let (status, _, _) = get(&c, &format!("{}{path}", spool.base()), None).await;
        assert_eq!(status, 404, "{path}");
    }
}
