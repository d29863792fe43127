//! What the configuration grants, built once at start: the access rules
//! of the media listener (signed links, the unsigned-link rule, CORS) and
//! the rules of the control plane (admin token, loopback trust, Host and
//! Origin names). Start-up refuses settings that would make spool unsafe
//! (an open proxy beyond loopback, a guessable admin token).

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::http;

/// The control plane's rules for a control plane listening on `admin`.
pub(crate) fn control(
    cfg: &Config,
    admin: Option<std::net::SocketAddr>,
) -> anyhow::Result<http::Control> {
    // An empty token is no token (an uncommented `SPOOL_ADMIN_TOKEN=`
    // must not let everyone in); a short one could be guessed.
    let admin_token = cfg
        .admin_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(t) = admin_token {
        anyhow::ensure!(
            t.len() >= crate::signing::MIN_SECRET_LEN,
            "SPOOL_ADMIN_TOKEN is too short ({} bytes; at least {}, e.g. `openssl rand -hex 32`)",
            t.len(),
            crate::signing::MIN_SECRET_LEN
        );
    }
    let trust_loopback = admin.is_some_and(|a| a.ip().is_loopback());
    if admin.is_some() && !trust_loopback && admin_token.is_none() {
        tracing::warn!(
            "the control plane listens beyond loopback without SPOOL_ADMIN_TOKEN: \
             its admin endpoints answer nobody"
        );
    }
    let hosts = cfg
        .admin_host
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    Ok(http::Control {
        admin_token: admin_token.map(Arc::from),
        trust_loopback,
        hosts: Arc::new(hosts),
    })
}

/// The access rules for a server listening on `local`. Refuses to serve
/// beyond loopback as an open proxy: that needs a key or an allowlist.
pub(crate) async fn access(
    cfg: &Config,
    local: std::net::SocketAddr,
) -> anyhow::Result<http::Access> {
    let signing = cfg.signing.clone();
    let key = tokio::task::spawn_blocking(move || signing.key())
        .await
        .context("loading the key")??;
    let loopback = local.ip().is_loopback();
    if !loopback && key.is_none() && cfg.allow_upstream.is_empty() {
        anyhow::bail!(
            "refusing to listen on {local} as an open proxy: anyone who reaches it could make \
             spool fetch any URL. Set SPOOL_SECRET (e.g. `openssl rand -hex 32`) or \
             SPOOL_SECRET_FILE to serve signed links (spool sign), and/or SPOOL_ALLOW_UPSTREAM \
             to name the media servers players may use; or listen on 127.0.0.1"
        );
    }
    let cors = match cfg.cors_origin.trim() {
        "" => None,
        o => Some(
            ::http::HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("--cors-origin {o:?} is not a header value"))?,
        ),
    };
    let restricted = key.is_some() || !loopback;
    if restricted {
        info!(
            signed_links = key.is_some(),
            "unsigned links are served only for --allow-upstream entries"
        );
    }
    let credentialed: Vec<url::Origin> = cfg
        .upstream_tables
        .iter()
        .filter(|t| !t.headers.is_empty())
        .map(|t| t.origin.clone())
        .collect();
    if !credentialed.is_empty() && key.is_none() {
        tracing::warn!("[[upstream]] headers are set but no key: only signed links may use those origins, so set SPOOL_SECRET or SPOOL_SECRET_FILE");
    }
    let public_url = cfg.signing.public_url(local);
    Ok(http::Access {
        key,
        restricted,
        allow: Arc::new(cfg.allow_upstream.clone()),
        credentialed: Arc::new(credentialed),
        public_host: public_host(&public_url),
        public_url: Arc::from(public_url),
        cors_origin: cors,
    })
}

/// The public URL's host when it is a name (an address literal is
/// answered anyway), lower case.
fn public_host(public_url: &str) -> Option<Arc<str>> {
    match url::Url::parse(public_url).ok()?.host()? {
        url::Host::Domain(d) => Some(Arc::from(d.to_ascii_lowercase())),
        _ => None,
    }
}
