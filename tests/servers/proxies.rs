//! spool behind the reverse proxies of `deploy/proxies/`, each run as the
//! real server from Debian's packages with the example's own
//! configuration (only addresses and ports put in): Caddy strips the
//! sub-path prefix, nginx passes it on; both also serve spool on a site of
//! its own (the subdomain example, here a port of its own). Through each,
//! ffmpeg plays an HLS stream and a file (what it decodes compared with
//! the origin's), and spool's per-client limit sees the real clients, not
//! the proxy.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::origin::{Faults, Origin};
use crate::common::{data, wait_for, Spool};
use crate::tools::{decoded_md5, make_hls_vod, make_video, serve_dir};
use crate::{free_port, Killed};

/// Requests at once per client (a player opens two or three at a seek).
const PER_CLIENT: usize = 4;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/proxies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path form of an origin URL, below `base` (a proxy's site, with or
/// without the prefix).
fn via(base: &str, origin_url: &str) -> String {
    let u = url::Url::parse(origin_url).unwrap();
    let origin: String =
        url::form_urlencoded::byte_serialize(u.origin().ascii_serialization().as_bytes()).collect();
    format!("{base}/p/{origin}{}", u.path())
}

/// Waits until something answers HTTP at `base`.
async fn answering(base: &str) {
    let c = crate::common::client();
    wait_for(&format!("{base} to answer"), || async {
        c.get(format!("{base}/health/live")).send().await.is_ok()
    })
    .await;
}

/// What the two example sites of a proxy serve: `sub` (the sub-path
/// site, prefix included) and `own` (spool on a site of its own).
struct Sites {
    sub: String,
    own: String,
}

/// Origin media: an HLS VOD under `hls/` and a file `film.mp4`; a slow
/// file `slow.mp4`. The spool behind the proxy believes 127.0.0.1 only,
/// allows one request at a time per client, and is reached at `sub`.
async fn setup(origin: &Origin, dir: &Path, public: &str) -> Spool {
    let hls = dir.join("hls");
    std::fs::create_dir_all(&hls).unwrap();
    make_hls_vod(&hls, 6).await;
    serve_dir(origin, &hls, "hls");
    let film = make_video(dir, "film.mp4", 4, &[]).await;
    origin.add_disk_file("film.mp4", film, "video/mp4");
    origin.add_file("slow.mp4", data(8 << 20, 5), "video/mp4");
    origin.set_faults("slow.mp4", Faults::throttled(64 * 1024));
    let public = public.to_owned();
    Spool::start_with(origin, move |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.signing.public_url = Some(public);
        c.max_connections_per_client = PER_CLIENT;
    })
    .await
}

/// Once the proxy answers on both sites (`sub`, and its own site on port
/// `own`), plays the HLS stream and the file through both with ffmpeg, and
/// checks that the per-client limit counts clients, not the proxy.
async fn plays_through(origin: &Origin, sub: String, own: u16) {
    let sites = Sites {
        sub,
        own: format!("http://127.0.0.1:{own}"),
    };
    answering(&sites.sub).await;
    answering(&sites.own).await;
    let hls = origin.url("hls/index.m3u8");
    let want_hls = decoded_md5(&hls, &[]).await;
    let film = origin.url("film.mp4");
    let want_film = decoded_md5(&film, &[]).await;
    for base in [&sites.sub, &sites.own] {
        assert_eq!(
            decoded_md5(&via(base, &hls), &[]).await,
            want_hls,
            "HLS via {base}"
        );
        assert_eq!(
            decoded_md5(&via(base, &film), &[]).await,
            want_film,
            "file via {base}"
        );
    }
    // A client holding its limit of slow streams gets 429 for one more;
    // another client is served meanwhile.
    let from = |last: u8| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let (a, b) = (from(2), from(3));
    let slow = via(&sites.sub, &origin.url("slow.mp4"));
    let mut held = Vec::new();
    for _ in 0..PER_CLIENT {
        let mut r = a.get(&slow).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.chunk().await.unwrap().unwrap().is_empty());
        held.push(r);
    }
    let second = a.get(via(&sites.sub, &film)).send().await.unwrap();
    assert_eq!(second.status(), 429, "one more request of the same client");
    let other = b
        .get(via(&sites.sub, &film))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        206,
        "another client, through the same proxy"
    );
    // A client naming another address for itself is not believed: the
    // proxy's hop is what counts.
    let spoofed = a
        .get(via(&sites.own, &film))
        .header("x-forwarded-for", "198.51.100.1")
        .header("forwarded", "for=198.51.100.2")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 429, "still the same client");
    drop(held);
    wait_for("the held streams' places back", || async {
        a.get(via(&sites.sub, &film))
            .header("range", "bytes=0-9")
            .send()
            .await
            .is_ok_and(|r| r.status() == 206)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_sub_path_and_own_site() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let sub = format!("http://127.0.0.1:{p1}/spool");
    let spool = setup(&origin, dir.path(), &sub).await;
    let config = dir.path().join("Caddyfile");
    std::fs::write(&config, example("Caddyfile")).unwrap();
    let _caddy = Killed(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("CADDY_ADMIN", "off")
            .env("SPOOL_SITE", format!("http://127.0.0.1:{p1}"))
            .env("SPOOL_SUBDOMAIN", format!("http://127.0.0.1:{p2}"))
            .env("SPOOL_UPSTREAM", spool.addr.to_string())
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caddy is installed (scripts/test-servers installs it)"),
    );
    plays_through(&origin, sub, p2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sub_path_and_own_site() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let sub = format!("http://127.0.0.1:{p1}/spool");
    let spool = setup(&origin, dir.path(), &sub).await;
    let d = dir.path();
    std::fs::write(d.join("spool-proxy.conf"), example("spool-proxy.conf")).unwrap();
    let site = example("nginx.conf")
        .replacen("listen 80;", &format!("listen 127.0.0.1:{p1};"), 1)
        .replacen("listen 80;", &format!("listen 127.0.0.1:{p2};"), 1)
        .replace("server 127.0.0.1:8080;", &format!("server {};", spool.addr))
        .replace(
            "/etc/nginx/spool-proxy.conf",
            &d.join("spool-proxy.conf").display().to_string(),
        );
    assert!(!site.contains("listen 80;") && site.contains(&spool.addr.to_string()));
    std::fs::write(d.join("spool.conf"), site).unwrap();
    // Around the example: what any nginx.conf has (here, all in the temp
    // directory); the server names of the example are not used, each site
    // has a port of its own.
    let user = if rustix::process::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let main = format!(
        "{user}\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         include {d}/spool.conf;\n}}\n",
        d = d.display()
    );
    std::fs::write(d.join("main.conf"), main).unwrap();
    let _nginx = Killed(
        Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("main.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/test-servers installs it)"),
    );
    plays_through(&origin, sub, p2).await;
}
