//! Flags, their environment twins and their values.

use std::time::Duration;

use clap::Parser;

use super::*;

#[test]
fn read_ahead_in_bytes_or_time() {
    assert_eq!(ReadAhead::parse("32MiB"), Ok(ReadAhead::Bytes(32 << 20)));
    assert_eq!(ReadAhead::parse("1m"), Ok(ReadAhead::Bytes(1 << 20)));
    assert_eq!(
        ReadAhead::parse("30s"),
        Ok(ReadAhead::Time(Duration::from_secs(30)))
    );
    assert_eq!(
        ReadAhead::parse("2min"),
        Ok(ReadAhead::Time(Duration::from_secs(120)))
    );
    let err = ReadAhead::parse("lots").unwrap_err();
    assert!(err.contains("30s"), "{err}");
    assert_eq!(ReadAhead::Time(Duration::from_secs(1)).max_bytes(7), 7);
    assert_eq!(ReadAhead::Bytes(5).max_bytes(7), 5);
}

#[test]
fn sizes() {
    assert_eq!(parse_size("4MiB"), Ok(4 << 20));
    assert_eq!(parse_size("4M"), Ok(4 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("1.5k"), Ok(1536));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("4 parsecs").is_err());
    assert!(parse_size(".").is_err());
    assert!(parse_size("1.2.3").is_err());
    assert_eq!(parse_size("0.5"), Ok(0));
    assert_eq!(parse_size(".5k"), Ok(512));
    // Above 2^53 an f64 loses bytes; these stay exact.
    assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
    assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    assert!(parse_size("18446744073709551616").is_err());
    assert_eq!(
        parse_size("16777215.999999999TiB"),
        Ok(18_446_744_073_709_550_516)
    );
    assert!(parse_size("16777216TiB").is_err());
}

#[test]
fn defaults() {
    let cfg = Config::new("/tmp/x");
    assert_eq!(cfg.chunk_size, 1 << 20);
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        cfg.admin_listen,
        OptionalAddr(Some("127.0.0.1:8081".parse().unwrap()))
    );
    assert!(!cfg.inline_documents);
}

#[test]
fn admin_listener_can_be_turned_off() {
    let cli = Cli::parse_from(["spool", "--admin-listen", ""]);
    assert_eq!(cli.serve.admin_listen, OptionalAddr(None));
    let cli = Cli::parse_from(["spool", "--admin-listen", "0.0.0.0:9"]);
    assert_eq!(cli.serve.admin_listen.0.unwrap().port(), 9);
    assert!(Cli::try_parse_from(["spool", "--admin-listen", "nowhere"]).is_err());
    let cli = Cli::parse_from(["spool", "--admin-host", "spool.lan,Admin.Example:8443"]);
    assert_eq!(cli.serve.admin_host, ["spool.lan", "Admin.Example:8443"]);
}

/// Library code neither reads `SPOOL_*` for a test's config nor exits
/// the process on a bad one. Runs in a child process, so the variable
/// set there cannot leak into other tests.
#[test]
fn defaults_ignore_the_environment() {
    if std::env::var_os("SPOOL_TEST_CONFIG_CHILD").is_some() {
        let cfg = Config::new("/tmp/x");
        assert_eq!(cfg.chunk_size, 1 << 20);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        return;
    }
    rerun_in_child(
        "config::tests::defaults_ignore_the_environment",
        &[
            ("SPOOL_TEST_CONFIG_CHILD", "1"),
            ("SPOOL_CHUNK_SIZE", "not a size"),
            ("SPOOL_LISTEN", "0.0.0.0:1"),
        ],
    );
}

#[test]
fn subcommand_and_bare_flags() {
    let cli = Cli::parse_from(["spool", "serve", "--chunk-size", "4MiB"]);
    assert!(matches!(cli.command, Some(Command::Serve(c)) if c.chunk_size == 4 << 20));
    let cli = Cli::parse_from(["spool", "--chunk-size", "2MiB"]);
    assert!(cli.command.is_none());
    assert_eq!(cli.serve.chunk_size, 2 << 20);
}

#[test]
fn public_urls() {
    for ok in [
        "https://home.lan/spool",
        "https://home.lan/spool/",
        "http://192.168.1.5:8080",
        "https://media.example/x/player",
        "https://home.lan/pics",
    ] {
        assert_eq!(parse_public_url(ok).as_deref(), Ok(ok), "{ok}");
    }
    for bad in [
        "home.lan/spool",
        "ftp://home.lan",
        "https://home.lan/spool?x=1",
        "https://home.lan/p",
        "https://home.lan/s/",
        "https://home.lan/stream",
        "https://home.lan/health/x",
    ] {
        assert!(parse_public_url(bad).is_err(), "{bad}");
    }
}
