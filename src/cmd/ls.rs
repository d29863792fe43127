//! `spool ls`: what the cache holds, a row per title (a playlist and all
//! it names; a file no playlist names), or per media with `--media`; from
//! the running spool or, with none answering, from the index read-only.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use indicatif::HumanBytes;

use super::remote::{reason, Answer, Api};
use crate::config::Remote;
use crate::store::summary::{self, MediaSummary};
use crate::store::titles::{self, TitleSummary};

/// Width of the bar of how much is cached.
const BAR: u64 = 20;

/// Rows asked for per request.
const PAGE: u64 = 1000;

/// Prints the table; says on stderr where it came from.
pub async fn ls(remote: &Remote, cache_dir: &Path, media: bool) -> anyhow::Result<()> {
    if media {
        return ls_media(remote, cache_dir).await;
    }
    let api = Api::new(remote)?;
    let mut rows: Vec<TitleSummary> = Vec::new();
    loop {
        let path = format!("/api/titles?limit={PAGE}&offset={}", rows.len());
        match api.get(&path).await? {
            Answer::Json(status, json) if status.is_success() => {
                let total = json.get("total").and_then(|t| t.as_u64()).unwrap_or(0);
                let page: Vec<TitleSummary> =
                    serde_json::from_value(json.get("titles").cloned().unwrap_or_default())
                        .context("spool's title list is not understood")?;
                let empty = page.is_empty();
                rows.extend(page);
                if empty || rows.len() as u64 >= total {
                    eprintln!("(from the running spool at {})", api.base);
                    break;
                }
            }
            Answer::Json(status, json) => {
                anyhow::bail!("spool refused: {}", reason(status, &json))
            }
            Answer::Nobody(why) => {
                let path = index_path(&why, cache_dir)?;
                let read = path.clone();
                let q = summary::PageQuery {
                    search: None,
                    sort: summary::Sort::Recent,
                    offset: 0,
                    limit: u64::MAX >> 1,
                };
                let (list, _) = tokio::task::spawn_blocking(move || {
                    summary::open_read_only(&read).and_then(|c| titles::page(&c, &q))
                })
                .await?
                .with_context(|| format!("cannot read the index {}", path.display()))?;
                eprintln!("({why}: read {} read-only)", path.display());
                rows = list
                    .into_iter()
                    .map(|mut t| {
                        t.url = crate::cache::admin::redacted(&t.url);
                        t
                    })
                    .collect();
                break;
            }
        }
    }
    let rows: Vec<Row> = rows.into_iter().map(Row::from).collect();
    print!("{}", table(&rows, crate::store::unix_now()));
    Ok(())
}

fn index_path(why: &str, cache_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = cache_dir.join("index.db");
    anyhow::ensure!(
        path.exists(),
        "{why}, and there is no index at {} (--cache-dir, SPOOL_CACHE_DIR)",
        path.display()
    );
    Ok(path)
}

/// `spool ls --media`: a row per media version.
async fn ls_media(remote: &Remote, cache_dir: &Path) -> anyhow::Result<()> {
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
            let path = index_path(&why, cache_dir)?;
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
    /// A media id, or `t` and a title id.
    #[serde(deserialize_with = "id_text")]
    id: String,
    url: String,
    size_bytes: u64,
    cached_bytes: u64,
    last_access_unix: i64,
    #[serde(default)]
    open_streams: usize,
    /// What follows the URL: a title's kind, renditions, files, duration,
    /// pin.
    #[serde(default)]
    notes: String,
}

fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    <i64 as serde::Deserialize>::deserialize(d).map(|i| i.to_string())
}

impl From<TitleSummary> for Row {
    fn from(t: TitleSummary) -> Row {
        let id = match (t.title_id, t.media_id) {
            (Some(t), _) => format!("t{t}"),
            (None, Some(m)) => m.to_string(),
            (None, None) => "?".into(),
        };
        let mut notes = Vec::new();
        if t.kind != "file" {
            notes.push(t.kind.to_uppercase());
            notes.push(match t.renditions {
                1 => "1 rendition".to_owned(),
                n => format!("{n} renditions"),
            });
            notes.push(format!("{}/{} files", t.cached_files, t.files));
        }
        if let Some(d) = t.duration_secs {
            notes.push(clock(d));
        }
        if t.pinned {
            notes.push("pinned".into());
        }
        // A title's share is of the renditions played; the bar shows it.
        let size = t.size_bytes.max(1);
        let cached = match t.kind.as_str() {
            "file" => t.cached_bytes,
            _ => (t.cached_percent / 100.0 * size as f64).round() as u64,
        };
        Row {
            id,
            url: t.url,
            size_bytes: t.size_bytes,
            cached_bytes: cached.min(size),
            last_access_unix: t.last_access_unix,
            open_streams: 0,
            notes: match notes.is_empty() {
                true => String::new(),
                false => format!("  ({})", notes.join(", ")),
            },
        }
    }
}

/// A duration as a clock: `1:02:03`, `4:05`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..3600 => format!("{}:{:02}", s / 60, s % 60),
        _ => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    }
}

impl From<MediaSummary> for Row {
    fn from(s: MediaSummary) -> Row {
        Row {
            id: s.media_id.to_string(),
            url: crate::cache::admin::redacted(&s.url),
            size_bytes: s.size_bytes,
            cached_bytes: s.cached_bytes,
            last_access_unix: s.last_access_unix,
            open_streams: 0,
            notes: String::new(),
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
            "{:>5}  {bar}  {:>5.1}%  {:>11}  {:<30}  {}{}{streams}\n",
            r.id,
            fraction * 100.0,
            HumanBytes(r.size_bytes).to_string(),
            format!(
                "{} ({} ago)",
                humantime::format_rfc3339_seconds(when),
                ago(now - r.last_access_unix)
            ),
            r.url,
            r.notes,
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
                id: "7".into(),
                notes: String::new(),
                url: "http://a/x.mp4".into(),
                size_bytes: 4 << 20,
                cached_bytes: 1 << 20,
                last_access_unix: 1000,
                open_streams: 1,
            },
            Row {
                id: "8".into(),
                notes: "  (HLS, 3 renditions, 1/7 files, 7:30, pinned)".into(),
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
        assert!(
            lines[2].ends_with("http://a/empty  (HLS, 3 renditions, 1/7 files, 7:30, pinned)"),
            "{t}"
        );
        assert_eq!(clock(4530.4), "1:15:30");
        assert_eq!(table(&[], 0).lines().nth(1), Some("(nothing cached)"));
    }
}
