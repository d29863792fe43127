//! A real Prometheus (Debian's `prometheus` package) scraping spool with
//! the admin token while players read, cold and warm; then every query of
//! `deploy/monitoring/grafana/dashboards/spool.json` evaluated with
//! `promtool query instant`, each returning data.

use std::process::{Command, Stdio};

use crate::common::origin::{Faults, Origin};
use crate::common::{client, data, get, wait_for, wait_until_cached, Spool};
use crate::{free_port, Killed};

const TOKEN: &str = "scrape-me-with-this-token";
const MIB: usize = 1024 * 1024;

/// Every query of the dashboard, with Grafana's `$__rate_interval` as a
/// minute.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/grafana/dashboards/spool.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            out.push(expr.replace("$__rate_interval", "1m"));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// A PromQL query's result through Prometheus's HTTP API.
async fn query(base: &str, q: &str) -> serde_json::Value {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let r = client()
        .get(format!("{base}/api/v1/query?query={q}"))
        .send()
        .await;
    match r {
        Ok(r) => {
            let body = r.bytes().await.unwrap_or_default();
            serde_json::from_slice(&body).unwrap_or_default()
        }
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    let origin = Origin::start().await;
    origin.add_file("a.mp4", data(4 * MIB, 1), "video/mp4");
    origin.add_file("slow.mp4", data(16 * MIB, 2), "video/mp4");
    origin.set_faults("slow.mp4", Faults::throttled(512 * 1024));
    let spool = Spool::start_with(&origin, |c| c.admin_token = Some(TOKEN.into())).await;
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = work.path().join("prometheus.yml");
    let yml = r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: spool
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: TOKEN_FILE
    static_configs:
      - targets: ["TARGET"]
"#;
    let yml = yml
        .replace("TOKEN_FILE", &token_file.display().to_string())
        .replace("TARGET", &spool.admin_addr.unwrap().to_string());
    std::fs::write(&config, yml).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test-servers installs it)"),
    );
    // Players: one slow stream held open, one file cold then warm again
    // and again while Prometheus scrapes.
    let http = client();
    let mut slow = http
        .get(spool.url(&origin.url("slow.mp4")))
        .send()
        .await
        .unwrap();
    // Read on in the background, as a player does.
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = slow.chunk().await {} });
    let a = origin.url("a.mp4");
    assert_eq!(get(&http, &spool.url(&a), None).await.0, 200);
    wait_until_cached(&spool.cache_dir, &a).await;
    wait_for("Prometheus to scrape spool a few times", || async {
        assert_eq!(
            get(&http, &spool.url(&a), Some("bytes=0-1048575")).await.0,
            206
        );
        let r = query(&base, "count_over_time(up{job=\"spool\"}[1m])").await;
        let n = r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        n >= 6.0
    })
    .await;
    let up = query(&base, "up{job=\"spool\"}").await;
    assert_eq!(
        up["data"]["result"][0]["value"][1], "1",
        "scraped with the token: {up}"
    );
    for q in dashboard_queries() {
        let out = Command::new("promtool")
            .args(["query", "instant", &base, &q])
            .output()
            .expect("promtool is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `{labels} => value @[time]`, one line per series: at least one
        // with a number.
        let values: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(" => ").nth(1))
            .filter_map(|v| v.split(' ').next())
            .collect();
        assert!(
            values
                .iter()
                .any(|v| v.parse::<f64>().is_ok_and(|x| !x.is_nan())),
            "{q} returned no data: {text}"
        );
    }
    reader.abort();
}
