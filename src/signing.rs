//! Signed links: `/s/<token>/<file name>`.
//!
//! A token grants one upstream file (the name after it is only for
//! players), or one upstream directory: then the path after the token is a
//! file within that directory, so that relative references in playlists
//! and manifests resolve through spool with the same grant.
//!
//! Players cannot send headers, so access rides in the URL. A token is the
//! upstream URL and an expiry, encrypted and authenticated with
//! XChaCha20-Poly1305: a link neither reveals its upstream (nor any
//! credentials in the upstream's query) nor lets anyone change it. The
//! 192-bit nonce is random, so nonces never repeat in practice.
//!
//! Token: base64url(version ‖ nonce (24) ‖ ciphertext of
//! (expiry as Unix seconds, u64 big-endian, 0 = never ‖ URL)). Version 1
//! grants a file, version 2 a directory (the URL's path ends in `/`); the
//! version is authenticated, so a file token cannot be turned into a
//! directory one.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const VERSION: u8 = 1;
/// The version byte of a directory-scoped token.
const VERSION_DIR: u8 = 2;
const NONCE: usize = 24;
/// Binds tokens to their purpose and format.
const AAD: &[u8] = b"spool signed link v1";
/// A secret shorter than this is refused: it could be guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// The key that signs and opens links.
#[derive(Clone)]
pub struct Key(XChaCha20Poly1305);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a token was refused: a short reason for the player's 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed signed link")]
    Malformed,
    #[error("signed link not valid (changed, or signed with another key)")]
    Invalid,
    #[error("signed link expired")]
    Expired,
}

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One upstream URL.
    File,
    /// Every file below one upstream directory (its URL ends in `/`).
    Dir,
}

/// An opened token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub url: String,
    pub scope: Scope,
    /// None: for ever.
    pub expires: Option<SystemTime>,
}

impl Key {
    /// Derives the key from a secret (`SPOOL_SECRET` or the key file) with
    /// HKDF-SHA256, so any long enough secret gives a uniform key.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Key> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_LEN,
            "the secret is too short ({} bytes; at least {MIN_SECRET_LEN}, e.g. `openssl rand -hex 32`)",
            secret.len()
        );
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
            .expand(b"spool signed links", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Ok(Key(XChaCha20Poly1305::new(&key.into())))
    }

    /// Reads the key file at `path`, creating it (32 random bytes, hex,
    /// mode 0600, never replacing a file another process made meanwhile)
    /// when it does not exist. Blocking.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Key> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::read_to_string(path) {
            Ok(s) => return Key::from_secret(s.trim().as_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot read the key file {}: {e}", path.display()),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        // Written whole to a temp file, then linked into place: a reader
        // never sees a half-written key, and a key another process made
        // meanwhile is never replaced (link fails if the name exists).
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{hex}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new key for signed links");
                Key::from_secret(hex.as_bytes())
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Key::load_or_create(path),
            Err(e) => anyhow::bail!("cannot create the key file {}: {e}", path.display()),
        }
    }

    /// A token for `url`, valid until `expires` (None: no expiry).
    pub fn seal(&self, url: &str, expires: Option<SystemTime>) -> String {
        self.seal_scoped(url, expires, Scope::File)
    }

    /// A token granting `url` as a file or, for [`Scope::Dir`], every file
    /// below it (`url` then ends in `/`).
    pub fn seal_scoped(&self, url: &str, expires: Option<SystemTime>, scope: Scope) -> String {
        let version = match scope {
            Scope::File => VERSION,
            Scope::Dir => VERSION_DIR,
        };
        let expiry = expires.map_or(0, unix);
        let mut plain = expiry.to_be_bytes().to_vec();
        plain.extend_from_slice(url.as_bytes());
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the OS gives randomness");
        let aad = [AAD, &[version]].concat();
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any length spool uses");
        let mut raw = Vec::with_capacity(1 + NONCE + sealed.len());
        raw.push(version);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The URL inside a token, if the token is whole, made with this key,
    /// and not expired at `now`.
    pub fn open(&self, token: &str, now: SystemTime) -> Result<String, TokenError> {
        self.open_grant(token, now).map(|g| g.url)
    }

    /// What a token grants, if it is whole, made with this key, and not
    /// expired at `now`.
    pub fn open_grant(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() < 1 + NONCE + 16 + 8 {
            return Err(TokenError::Malformed);
        }
        let scope = match raw[0] {
            VERSION => Scope::File,
            VERSION_DIR => Scope::Dir,
            _ => return Err(TokenError::Malformed),
        };
        let aad = [AAD, &raw[..1]].concat();
        let plain = self
            .0
            .decrypt(
                XNonce::from_slice(&raw[1..1 + NONCE]),
                Payload {
                    msg: &raw[1 + NONCE..],
                    aad: &aad,
                },
            )
            .map_err(|_| TokenError::Invalid)?;
        let (expiry, url) = plain.split_at(8);
        let expiry = u64::from_be_bytes(expiry.try_into().expect("8 bytes"));
        if expiry != 0 && unix(now) >= expiry {
            return Err(TokenError::Expired);
        }
        let url = String::from_utf8(url.to_vec()).map_err(|_| TokenError::Invalid)?;
        Ok(Grant {
            url,
            scope,
            expires: (expiry != 0).then(|| UNIX_EPOCH + Duration::from_secs(expiry)),
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The file name a link ends in: the upstream URL's last path segment
/// (players take the name, and often the type, from it), or `media`.
pub fn file_name(url: &url::Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("media")
        .to_owned()
}

/// How long a link works: None for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(pub Option<Duration>);

impl std::fmt::Display for Expiry {
    /// What [`parse_expires`] reads back: `never`, or a duration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("never"),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

/// Parses `--expires`: a duration (`30d`, `12h`) or `never`.
pub fn parse_expires(s: &str) -> Result<Expiry, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Expiry(None));
    }
    humantime::parse_duration(s)
        .map(|d| Expiry(Some(d)))
        .map_err(|e| format!("{s:?} is not a duration or `never`: {e}"))
}

/// A playable link: `<public url>/s/<token>/<file name>`; None when the
/// expiry lies beyond what a clock can hold.
pub fn link(public_url: &str, key: &Key, url: &url::Url, expires: Expiry) -> Option<String> {
    link_scoped(public_url, key, url, expires, Scope::File)
}

/// Whether a URL names a playlist or manifest (`.m3u8`, `.m3u`, `.mpd`),
/// whose links `spool sign` scopes to its directory by default.
pub fn is_playlist_name(url: &url::Url) -> bool {
    let name = file_name(url).to_ascii_lowercase();
    [".m3u8", ".m3u", ".mpd"].iter().any(|e| name.ends_with(e))
}

/// The directory of `url`: its path up to the last `/`, its query kept
/// (credentials in it go with every file of the directory).
pub fn directory_of(url: &url::Url) -> url::Url {
    let mut dir = url.clone();
    let path = url.path();
    let cut = path.rfind('/').map_or(0, |i| i + 1);
    dir.set_path(&path[..cut.max(1)]);
    dir.set_fragment(None);
    dir
}

/// A playable link for `url`; with [`Scope::Dir`], its token grants the
/// URL's directory and the link ends in the file's path within it, so that
/// relative references from the file resolve through spool too. None when
/// the expiry lies beyond what a clock can hold.
pub fn link_scoped(
    public_url: &str,
    key: &Key,
    url: &url::Url,
    expires: Expiry,
    scope: Scope,
) -> Option<String> {
    let expires = match expires.0 {
        None => None,
        Some(d) => Some(SystemTime::now().checked_add(d)?).filter(|t| unix(*t) < i64::MAX as u64),
    };
    let token = match scope {
        Scope::File => key.seal(url.as_str(), expires),
        Scope::Dir => key.seal_scoped(directory_of(url).as_str(), expires, Scope::Dir),
    };
    Some(format!(
        "{}/s/{}/{}",
        public_url.trim_end_matches('/'),
        token,
        file_name(url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_secret(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = key();
        let now = SystemTime::now();
        let t = k.seal("http://nas.lan/a.mp4?token=x", None);
        assert_eq!(k.open(&t, now).unwrap(), "http://nas.lan/a.mp4?token=x");
        let t = k.seal("http://nas.lan/a.mp4", Some(now + Duration::from_secs(60)));
        assert_eq!(k.open(&t, now).unwrap(), "http://nas.lan/a.mp4");
        assert_eq!(
            k.open(&t, now + Duration::from_secs(61)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn the_url_is_not_readable_in_the_token() {
        let t = key().seal("http://nas.lan/secret-name.mp4?api_key=hunter2", None);
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("nas.lan") && !text.contains("hunter2"));
        // Same URL twice: different tokens (random nonce).
        assert_ne!(
            t,
            key().seal("http://nas.lan/secret-name.mp4?api_key=hunter2", None)
        );
    }

    #[test]
    fn every_changed_bit_is_refused() {
        let k = key();
        let t = k.seal("http://nas.lan/a.mp4", None);
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                let r = k.open(&URL_SAFE_NO_PAD.encode(&bad), SystemTime::now());
                assert!(
                    matches!(r, Err(TokenError::Invalid | TokenError::Malformed)),
                    "byte {i} bit {bit}: {r:?}"
                );
            }
        }
        let other = Key::from_secret(b"another secret, just as long").unwrap();
        assert_eq!(other.open(&t, SystemTime::now()), Err(TokenError::Invalid));
        for junk in ["", "!!!", "AAAA", &t[..t.len() / 2]] {
            assert!(k.open(junk, SystemTime::now()).is_err(), "{junk}");
        }
    }

    #[test]
    fn directory_tokens_carry_their_scope_and_expiry() {
        let k = key();
        let now = SystemTime::now();
        let exp = UNIX_EPOCH + Duration::from_secs(unix(now) + 3600);
        let t = k.seal_scoped("http://nas.lan/show/", Some(exp), Scope::Dir);
        let g = k.open_grant(&t, now).unwrap();
        assert_eq!(
            g,
            Grant {
                url: "http://nas.lan/show/".into(),
                scope: Scope::Dir,
                expires: Some(exp)
            }
        );
        let f = k
            .open_grant(&k.seal("http://nas.lan/a.ts", None), now)
            .unwrap();
        assert_eq!((f.scope, f.expires), (Scope::File, None));
        // The scope is authenticated: a file token with its version byte
        // changed to the directory one is refused.
        let mut raw = URL_SAFE_NO_PAD
            .decode(k.seal("http://nas.lan/", None))
            .unwrap();
        raw[0] = VERSION_DIR;
        assert_eq!(
            k.open_grant(&URL_SAFE_NO_PAD.encode(&raw), now),
            Err(TokenError::Invalid)
        );
        let u = url::Url::parse("http://h/a/b/master.m3u8?k=1").unwrap();
        assert_eq!(directory_of(&u).as_str(), "http://h/a/b/?k=1");
        assert!(is_playlist_name(&u));
        assert!(!is_playlist_name(
            &url::Url::parse("http://h/a.mp4").unwrap()
        ));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Key::from_secret(b"hunter2").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let a = Key::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Key::load_or_create(&path).unwrap();
        let t = a.seal("http://x/y", None);
        assert_eq!(b.open(&t, SystemTime::now()).unwrap(), "http://x/y");
    }

    #[test]
    fn names_and_expiry_flags() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            file_name(&u("http://h/a/b/movie%20one.mkv?x=1")),
            "movie%20one.mkv"
        );
        assert_eq!(file_name(&u("http://h/")), "media");
        assert_eq!(parse_expires("never"), Ok(Expiry(None)));
        assert_eq!(
            parse_expires("30d"),
            Ok(Expiry(Some(Duration::from_secs(30 * 86400))))
        );
        assert!(parse_expires("soon").is_err());
    }
}
