//! The settings file (`--config spool.toml`).
//!
//! Its keys are the long names of `spool serve`'s flags (`max_downloads`
//! or `max-downloads`), so every setting has one name and one parser: the
//! file's values are handed to the same command-line parser, only for
//! settings that neither a flag nor a `SPOOL_*` variable gave. One order of
//! precedence: flags > environment > file > defaults.
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! allow_upstream = ["192.168.1.10:8096"]
//!
//! [[upstream]]
//! origin = "http://192.168.1.10:8096"
//! headers = { "X-Emby-Token" = "…" }
//! ```

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Cli, Command, Config, UpstreamTable};

/// Parses the command line (and environment), then the settings file it
/// names, if any. Errors name the file and the setting.
pub fn load(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let matches = Cli::command().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    // `serve` (or no subcommand) takes every setting; `sign`,
    // `healthcheck`, `ls` and `prefetch` take the few they share with it
    // (key, public URL, listen address, admin token, cache directory) and
    // pass over the rest.
    let (sub_matches, sub) = match matches.subcommand() {
        Some((name @ ("serve" | "sign" | "healthcheck" | "ls" | "prefetch"), m)) => (m, Some(name)),
        Some(_) => return Ok(cli),
        None => (&matches, None),
    };
    let path = match (&cli.command, sub) {
        (Some(Command::Serve(c)), _) => c.config.clone(),
        (None, _) => cli.serve.config.clone(),
        (_, Some(_)) => sub_matches.get_one::<std::path::PathBuf>("config").cloned(),
        _ => None,
    };
    let Some(path) = path else {
        return Ok(cli);
    };
    let in_subcommand = sub.is_some();
    let known = match sub {
        None | Some("serve") => None,
        Some(name) => Cli::command().find_subcommand(name).cloned(),
    };
    let serve_matches = sub_matches;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let (flags, headers) = file_args(&table, serve_matches, &path, known.as_ref())?;
    // The file's settings go in front of the command line's, after the
    // subcommand, so clap sees them as given on the command line; those
    // set by a flag or the environment were left out above.
    let mut argv = args.clone();
    let at = if in_subcommand {
        1 + args[1..]
            .iter()
            .position(|a| Some(a.to_string_lossy().as_ref()) == sub)
            .expect("the subcommand was given")
            + 1
    } else {
        1
    };
    argv.splice(at..at, flags.into_iter().map(OsString::from));
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow::anyhow!("in {}: {}", path.display(), e.render()))?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    match &mut cli.command {
        Some(Command::Serve(c)) => c.upstream_tables = headers,
        _ => cli.serve.upstream_tables = headers,
    }
    Ok(cli)
}

/// The file's settings as flags, and its per-origin headers.
/// `only`: a subcommand other than `serve`, which takes only its own
/// settings from the file.
fn file_args(
    table: &toml::Table,
    given: &clap::ArgMatches,
    path: &Path,
    only: Option<&clap::Command>,
) -> anyhow::Result<(Vec<String>, Vec<UpstreamTable>)> {
    let serve = Config::augment_args(clap::Command::new("serve"));
    let known = only.unwrap_or(&serve);
    let mut flags = Vec::new();
    let mut headers = Vec::new();
    for (key, value) in table {
        if key == "upstream" {
            headers = upstreams(value).with_context(|| format!("in {}", path.display()))?;
            continue;
        }
        let id = key.replace('-', "_");
        let find = |c: &clap::Command| {
            c.get_arguments()
                .find(|a| a.get_id().as_str() == id && a.get_long().is_some())
                .cloned()
        };
        let Some(arg) = find(known) else {
            if only.is_some() && find(&serve).is_some() {
                continue;
            }
            bail!("in {}: unknown setting `{key}`", path.display());
        };
        if id == "config" {
            bail!("in {}: `config` cannot name another file", path.display());
        }
        if matches!(
            given.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().expect("checked above");
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    flags.push(format!("--{long}"));
                }
            }
            toml::Value::String(s) => flags.push(format!("--{long}={s}")),
            toml::Value::Integer(i) => flags.push(format!("--{long}={i}")),
            toml::Value::Float(f) => flags.push(format!("--{long}={f}")),
            toml::Value::Array(items) => {
                let parts: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                let Some(parts) = parts else {
                    bail!("in {}: `{key}` must be a list of strings", path.display());
                };
                flags.push(format!("--{long}={}", parts.join(",")));
            }
            other => bail!(
                "in {}: `{key}` cannot be {} ({other})",
                path.display(),
                other.type_str()
            ),
        }
    }
    Ok((flags, headers))
}

/// `[[upstream]]` tables: `origin` and `headers`.
fn upstreams(value: &toml::Value) -> anyhow::Result<Vec<UpstreamTable>> {
    let Some(items) = value.as_array() else {
        bail!("`upstream` must be a list of tables ([[upstream]])");
    };
    let mut out = Vec::new();
    for item in items {
        let Some(t) = item.as_table() else {
            bail!("`upstream` must be a list of tables ([[upstream]])");
        };
        for k in t.keys() {
            if !matches!(
                k.as_str(),
                "origin"
                    | "headers"
                    | "redirect_hosts"
                    | "cache_key_ignore_query"
                    | "fill_while_watched"
            ) {
                bail!(
                    "[[upstream]]: unknown key `{k}` (origin, headers, redirect_hosts, \
                     cache_key_ignore_query, fill_while_watched)"
                );
            }
        }
        let Some(origin) = t.get("origin").and_then(|o| o.as_str()) else {
            bail!("[[upstream]] needs `origin`, e.g. \"http://192.168.1.10:8096\"");
        };
        let parsed = url::Url::parse(origin)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .with_context(|| format!("[[upstream]] origin {origin:?} is not an http(s) URL"))?;
        let mut map = HeaderMap::new();
        let given = t.get("headers").and_then(|h| h.as_table());
        for (name, v) in given.into_iter().flatten() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("[[upstream]] {origin}: bad header name {name:?}"))?;
            let mut value = v
                .as_str()
                .and_then(|s| HeaderValue::from_str(s).ok())
                .with_context(|| {
                    format!("[[upstream]] {origin}: header {name} needs a text value")
                })?;
            // Never shown by Debug (logs).
            value.set_sensitive(true);
            map.insert(name, value);
        }
        let mut redirect_hosts = Vec::new();
        if let Some(v) = t.get("redirect_hosts") {
            let list = v.as_array().with_context(|| {
                format!("[[upstream]] {origin}: redirect_hosts must be a list of host names")
            })?;
            for h in list {
                let name = h
                    .as_str()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| valid_host_pattern(s))
                    .with_context(|| {
                        format!(
                            "[[upstream]] {origin}: redirect_hosts entry {h} is not a host name \
                             (or *.domain)"
                        )
                    })?;
                redirect_hosts.push(name);
            }
        }
        let ignore: Vec<String> = match t.get("cache_key_ignore_query") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|l| l.iter().map(|n| n.as_str().map(str::to_owned)).collect())
                .with_context(|| {
                    format!(
                        "[[upstream]] {origin}: cache_key_ignore_query must be a list of \
                         query parameter names (or * patterns)"
                    )
                })?,
        };
        let cache_key_ignore_query = crate::upstream::QueryFilter::parse(&ignore)
            .map_err(|e| anyhow::anyhow!("[[upstream]] {origin}: cache_key_ignore_query: {e}"))?;
        let fill_while_watched = match t.get("fill_while_watched") {
            None => None,
            Some(v) => Some(v.as_bool().with_context(|| {
                format!("[[upstream]] {origin}: fill_while_watched must be true or false")
            })?),
        };
        // One table per origin: two would each hold part of its rule, and
        // which part applies would depend on the lookup.
        if let Some(first) = out
            .iter()
            .find(|u: &&UpstreamTable| u.origin == parsed.origin())
        {
            bail!(
                "[[upstream]] {} appears twice: put its headers and redirect_hosts in one table",
                first.origin.ascii_serialization()
            );
        }
        out.push(UpstreamTable {
            origin: parsed.origin(),
            headers: map,
            redirect_hosts,
            cache_key_ignore_query,
            fill_while_watched,
        });
    }
    Ok(out)
}

/// A host name, or `*.` and a name with at least one dot.
fn valid_host_pattern(s: &str) -> bool {
    let name = s.strip_prefix("*.").unwrap_or(s);
    let ok = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    ok && (name.len() == s.len() || name.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(file: &str, args: &[&str]) -> anyhow::Result<Cli> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["spool".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(path.into());
        load(argv)
    }

    fn serve(cli: &Cli) -> &Config {
        match &cli.command {
            Some(Command::Serve(c)) => c,
            _ => &cli.serve,
        }
    }

    #[test]
    fn file_fills_in_what_flags_do_not_give() {
        let file = r#"
            max_downloads = 7
            chunk-size = "1MiB"
            read_ahead = "8MiB"
            fsync_chunks = true
            allow_upstream = ["192.168.1.10:8096", "nas.lan"]
        "#;
        let cli = run(file, &["serve", "--read-ahead", "2MiB"]).unwrap();
        let c = serve(&cli);
        assert_eq!(c.max_downloads, 7);
        assert_eq!(c.chunk_size, 1 << 20);
        assert_eq!(
            c.read_ahead,
            crate::config::ReadAhead::Bytes(2 << 20),
            "the flag wins over the file"
        );
        assert!(c.fsync_chunks);
        assert_eq!(c.max_ranges, 16, "default kept");
        // Without the subcommand too.
        let cli = run(file, &["--read-ahead", "2MiB"]).unwrap();
        assert_eq!(serve(&cli).max_downloads, 7);
        assert_eq!(
            serve(&cli).read_ahead,
            crate::config::ReadAhead::Bytes(2 << 20)
        );
    }

    #[test]
    fn sign_and_healthcheck_take_their_settings_from_the_file() {
        let file = r#"
            listen = "0.0.0.0:9090"
            secret = "from the settings file, long enough"
            public_url = "http://nas.lan:9090"
            max_downloads = 7
            [[upstream]]
            origin = "http://nas.lan:8096"
            headers = { "X-Emby-Token" = "x" }
        "#;
        let cli = run(file, &["sign", "http://nas.lan/a.mp4"]).unwrap();
        let Some(Command::Sign {
            signing, listen, ..
        }) = &cli.command
        else {
            panic!("not sign: {cli:?}");
        };
        assert_eq!(listen.port(), 9090);
        assert_eq!(signing.public_url.as_deref(), Some("http://nas.lan:9090"));
        assert!(signing.secret.is_some());
        let cli = run(file, &["healthcheck", "--timeout", "1s"]).unwrap();
        let Some(Command::Healthcheck {
            listen, timeout, ..
        }) = &cli.command
        else {
            panic!("not healthcheck: {cli:?}");
        };
        assert_eq!((listen.port(), timeout.as_secs()), (9090, 1));
        // Still strict about keys no command knows.
        assert!(run("max_dowloads = 3", &["healthcheck"]).is_err());
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let e = run("max_downloads = \"lots\"", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("--max-downloads"), "{e:#}");
        let e = run("max_dowloads = 3", &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown setting `max_dowloads`"),
            "{e:#}"
        );
        let e = run("chunk_size = \"4 parsecs\"", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("--chunk-size"), "{e:#}");
        let e = run("[[upstream]]\norigin = \"ftp://x\"", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("not an http(s) URL"), "{e:#}");
        let twice = "[[upstream]]\norigin = \"http://nas.lan:8096\"\nheaders = { X-Token = \"a\" }\n\
                     [[upstream]]\norigin = \"http://NAS.lan:8096/other\"\nredirect_hosts = [\"cdn.example\"]";
        let e = run(twice, &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("http://nas.lan:8096 appears twice"),
            "{e:#}"
        );
        let e = run("this is = not toml", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
    }

    #[test]
    fn upstream_tables_are_read_and_hidden() {
        let file = r#"
            [[upstream]]
            origin = "http://192.168.1.10:8096/ignored/path"
            headers = { "X-Emby-Token" = "hunter2" }
        "#;
        let cli = run(file, &[]).unwrap();
        let h = &serve(&cli).upstream_tables;
        assert_eq!(h.len(), 1);
        assert_eq!(
            h[0].origin.ascii_serialization(),
            "http://192.168.1.10:8096"
        );
        assert_eq!(h[0].headers["x-emby-token"], "hunter2");
        assert!(h[0].redirect_hosts.is_empty());
        let shown = format!("{:?}", serve(&cli));
        assert!(!shown.contains("hunter2"), "{shown}");
        let file = r#"
            [[upstream]]
            origin = "https://cdn.example"
            redirect_hosts = ["Storage.Example.net", "*.s3.amazonaws.com"]
        "#;
        let cli = run(file, &[]).unwrap();
        let t = &serve(&cli).upstream_tables[0];
        assert!(t.headers.is_empty());
        assert_eq!(
            t.redirect_hosts,
            ["storage.example.net", "*.s3.amazonaws.com"]
        );
        for bad in ["\"a b\"", "\"*\"", "\"*.com\"", "\"x/y\"", "1"] {
            let file = format!("[[upstream]]\norigin = \"http://h\"\nredirect_hosts = [{bad}]");
            let e = run(&file, &[]).unwrap_err();
            assert!(format!("{e:#}").contains("redirect_hosts"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn cache_keys_globally_and_per_upstream() {
        let file = r#"
            cache-key-ignore-query = ["Expires", "token"]
            [[upstream]]
            origin = "https://bucket.s3.example"
            cache_key_ignore_query = ["X-Amz-*"]
        "#;
        let cli = run(file, &[]).unwrap();
        let cfg = serve(&cli);
        let q = &cfg.cache_key_ignore_query;
        assert!(q.ignores("expires") && q.ignores("TOKEN") && !q.ignores("x-amz-date"));
        let t = &cfg.upstream_tables[0].cache_key_ignore_query;
        assert!(t.ignores("X-Amz-Signature") && !t.ignores("token"));
        let cli = run("", &["--cache-key-ignore-query", "sig,X-Goog-*"]).unwrap();
        assert!(serve(&cli).cache_key_ignore_query.ignores("x-goog-date"));
        for bad in [r#"["a=b"]"#, r#""token""#, "[1]"] {
            let file =
                format!("[[upstream]]\norigin = \"http://h\"\ncache_key_ignore_query = {bad}");
            let e = run(&file, &[]).unwrap_err();
            assert!(
                format!("{e:#}").contains("cache_key_ignore_query"),
                "{bad}: {e:#}"
            );
        }
        assert!(run("", &["--cache-key-ignore-query", "a&b"]).is_err());
    }

    #[test]
    fn fill_while_watched_per_upstream() {
        let file = r#"
            [[upstream]]
            origin = "http://nas.lan:8096"
            fill_while_watched = true
            [[upstream]]
            origin = "https://cdn.example"
        "#;
        let cli = run(file, &[]).unwrap();
        let cfg = serve(&cli);
        assert!(!cfg.fill_while_watched);
        assert_eq!(cfg.upstream_tables[0].fill_while_watched, Some(true));
        assert_eq!(cfg.upstream_tables[1].fill_while_watched, None);
        let e = run(
            "[[upstream]]\norigin = \"http://h\"\nfill_while_watched = \"yes\"",
            &[],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("fill_while_watched"), "{e:#}");
    }

    /// The environment wins over the file. In a child process, so the
    /// variable cannot leak into other tests.
    #[test]
    fn environment_wins_over_the_file() {
        if std::env::var_os("SPOOL_TEST_FILE_CHILD").is_some() {
            let cli = run("max_downloads = 7\nmax_ranges = 3", &[]).unwrap();
            assert_eq!(serve(&cli).max_downloads, 9);
            assert_eq!(serve(&cli).max_ranges, 3);
            return;
        }
        crate::config::rerun_in_child(
            "config_file::tests::environment_wins_over_the_file",
            &[("SPOOL_TEST_FILE_CHILD", "1"), ("SPOOL_MAX_DOWNLOADS", "9")],
        );
    }
}
