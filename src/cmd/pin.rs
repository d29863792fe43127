//! `spool pin` and `spool unpin`: keep a title cached whatever size or age
//! eviction wants (only a disk below its critical level takes it, last),
//! through a running spool's admin API.

use super::remote::{reason, Answer, Api};
use crate::config::Remote;

/// Pins (or unpins) the title each URL is or belongs to; a cached file no
/// playlist names becomes a title of its own. Prints one line per URL;
/// false when any was refused.
pub async fn pin(urls: &[String], pinned: bool, remote: &Remote) -> anyhow::Result<bool> {
    let api = Api::new(remote)?;
    let path = if pinned { "/api/pin" } else { "/api/unpin" };
    let mut all = true;
    for url in urls {
        match api.post(path, &serde_json::json!({ "url": url })).await? {
            Answer::Json(status, json) if status.is_success() => {
                let t = &json["title"];
                println!(
                    "{} title {} ({}, {}% cached): {}",
                    if pinned { "pinned" } else { "unpinned" },
                    t["title_id"],
                    t["kind"].as_str().unwrap_or("?"),
                    t["cached_percent"],
                    t["url"].as_str().unwrap_or("?"),
                );
            }
            Answer::Json(status, json) => {
                all = false;
                println!("{url}: refused ({})", reason(status, &json));
            }
            Answer::Nobody(why) => anyhow::bail!("{why}: pinning needs a running spool"),
        }
    }
    Ok(all)
}
