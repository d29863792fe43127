//! `spool ls`: the cached media, from the running spool or, with none
//! answering, from the index read-only.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use indicatif::HumanBytes;

use super::remote::{reason, Answer, Api};
use crate::config::Remote;
use crate::store::summary::{self, MediaSummary};

/// Width of the bar of how much is cached.
const BAR: u64 = 20;

/// Prints the table; says on stderr where it came from.
pub async fn ls(remote: &Remote, cache_dir: &Path) -> anyhow::Result<()> {
    let api = Api::new(remote)?;
    let rows = match api.get("/api/media").await? {
        Answer::Json(status, json) if status.is_success() => {
            let media = json.get("media").cloned().unwrap_or_default();
            let rows: Vec<Row> =
                serde_json::from_value(media).context("spool's media list is not understood")?;
            eprintln!("(from the running spool at {})", api.base);
            rows
        }
        Answer::Json(status, json) => anyhow::bail!("spool refused: {}", reason(status, &json)),
        Answer::Nobody(why) => {
            let path = cache_dir.join("index.db");
            anyhow::ensure!(
                path.exists(),
                "{why}, and there is no index at {} (--cache-dir, SPOOL_CACHE_DIR)",
                path.display()
            );
            let read = path.clone();
            let list = tokio::task::spawn_blocking(move || {
                summary::open_read_only(&read).and_then(|c| summary::list(&c))
            })
            .await?
            .with_context(|| format!("cannot read the index {}", path.display()))?;
            eprintln!("({why}: read {} read-only)", path.display());
            list.into_iter().map(Row::from).collect()
        }
    };
    print!("{}", table(&rows, crate::store::unix_now()));
    Ok(())
}

/// One line of the table: what the API and the index both tell.
#[derive(Debug, serde::Deserialize)]
struct Row {
    id: i64,
    url: String,
    size_bytes: u64,
    cached_bytes: u64,
    last_access_unix: i64,
    #[serde(default)]
    open_streams: usize,
}

impl From<MediaSummary> for Row {
    fn from(s: MediaSummary) -> Row {
        Row {
            id: s.media_id,
            url: crate::cache::admin::redacted(&s.url),
            size_bytes: s.size_bytes,
            cached_bytes: s.cached_bytes,
            last_access_unix: s.last_access_unix,
            open_streams: 0,
        }
    }
}

fn table(rows: &[Row], now: i64) -> String {
    let mut out = format!(
        "{:>5}  {:<w$}  {:>6}  {:>11}  {:<30}  {}\n",
        "ID",
        "CACHED",
        "",
        "SIZE",
        "LAST ACCESS",
        "URL",
        w = BAR as usize + 2
    );
    for r in rows {
        let fraction = match r.size_bytes {
            0 => 1.0,
            n => r.cached_bytes.min(n) as f64 / n as f64,
        };
        let full = (fraction * BAR as f64).floor() as u64;
        let bar = format!(
            "[{}{}]",
            "#".repeat(full as usize),
            "-".repeat((BAR - full) as usize)
        );
        let when = UNIX_EPOCH + Duration::from_secs(r.last_access_unix.max(0) as u64);
        let streams = match r.open_streams {
            0 => String::new(),
            n => format!("  ({n} streaming)"),
        };
        out += &format!(
            "{:>5}  {bar}  {:>5.1}%  {:>11}  {:<30}  {}{streams}\n",
            r.id,
            fraction * 100.0,
            HumanBytes(r.size_bytes).to_string(),
            format!(
                "{} ({} ago)",
                humantime::format_rfc3339_seconds(when),
                ago(now - r.last_access_unix)
            ),
            r.url,
        );
    }
    if rows.is_empty() {
        out += "(nothing cached)\n";
    }
    out
}

/// A short age: `12s`, `5m`, `3h`, `2d`.
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_how_much_is_cached() {
        let rows = [
            Row {
                id: 7,
                url: "http://a/x.mp4".into(),
                size_bytes: 4 << 20,
                cached_bytes: 1 << 20,
                last_access_unix: 1000,
                open_streams: 1,
            },
            Row {
                id: 8,
                url: "http://a/empty".into(),
                size_bytes: 0,
                cached_bytes: 0,
                last_access_unix: 0,
                open_streams: 0,
            },
        ];
        let t = table(&rows, 1000 + 7200);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("[#####---------------]"), "{t}");
        assert!(
            lines[1].contains("25.0%") && lines[1].contains("4.00 MiB"),
            "{t}"
        );
        assert!(
            lines[1].contains("1970-01-01T00:16:40Z (2h ago)")
                && lines[1].contains("(1 streaming)"),
            "{t}"
        );
        assert!(lines[2].contains("[####################]  100.0%"), "{t}");
        assert_eq!(table(&[], 0).lines().nth(1), Some("(nothing cached)"));
    }
}
