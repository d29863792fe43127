//! `spool sign`: a signed link made from the shell.

use anyhow::Context;

/// A signed, playable link for `url`: for the URL's directory when
/// `scope` says so or, without a scope, when it names a playlist or
/// manifest.
pub fn sign(
    url: &str,
    scope: Option<crate::signing::Scope>,
    expires: crate::signing::Expiry,
    signing: &crate::config::Signing,
    listen: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let url = crate::upstream::parse_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = signing.key()?.context(
        "no key: set SPOOL_SECRET, or SPOOL_SECRET_FILE to the key file the server uses",
    )?;
    let scope = scope.unwrap_or(if crate::signing::is_playlist_name(&url) {
        crate::signing::Scope::Dir
    } else {
        crate::signing::Scope::File
    });
    crate::signing::link_scoped(&signing.public_url(listen), &key, &url, expires, scope)
        .context("--expires is too far away")
}
