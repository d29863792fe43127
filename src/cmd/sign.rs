//! `spool sign`: a signed link made from the shell. The running spool
//! signs it (`POST /sign` on its control plane), so the link carries the
//! public URL and key the server uses; with no spool answering, the key
//! configured here signs it.

use anyhow::Context;

use super::remote::{reason, Answer, Api};
use crate::config::{Remote, Signing};
use crate::signing::{Expiry, Scope};

/// A signed, playable link for `url`: for the URL's directory when
/// `scope` says so or, without a scope, when it names a playlist or
/// manifest.
pub async fn sign(
    url: &str,
    scope: Option<Scope>,
    expires: Expiry,
    signing: &Signing,
    listen: std::net::SocketAddr,
    remote: &Remote,
) -> anyhow::Result<String> {
    let parsed = crate::upstream::parse_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let why = match remote.admin_listen.0 {
        None => "the control plane is off".to_owned(),
        Some(_) => {
            let api = Api::new(remote)?;
            let mut req = serde_json::json!({
                "url": parsed.as_str(),
                "expires": expires.to_string(),
            });
            if let Some(scope) = scope {
                req["scope"] = match scope {
                    Scope::Dir => "directory",
                    Scope::File => "file",
                }
                .into();
            }
            // Not reached, or no admin right here (no token): the key
            // file, if this shell can read it, signs.
            match api.post("/sign", &req).await {
                Ok(Answer::Json(status, json)) if status.is_success() => {
                    return json
                        .get("url")
                        .and_then(|u| u.as_str())
                        .map(str::to_owned)
                        .context("spool answered without a \"url\"");
                }
                Ok(Answer::Json(status, json)) => {
                    anyhow::bail!("spool refused: {}", reason(status, &json))
                }
                Ok(Answer::Nobody(why)) => why,
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let key = signing.key()?.with_context(|| {
        format!(
            "{why}, and no key here: set SPOOL_SECRET, or SPOOL_SECRET_FILE to the key file \
             the server uses"
        )
    })?;
    eprintln!("({why}: signed with the key configured here)");
    let scope = scope.unwrap_or(if crate::signing::is_playlist_name(&parsed) {
        Scope::Dir
    } else {
        Scope::File
    });
    crate::signing::link_scoped(&signing.public_url(listen), &key, &parsed, expires, scope)
        .context("--expires is too far away")
}
