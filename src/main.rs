use spool::config::{Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc, with its background threads: memory freed after a burst of
/// players goes back to the system within seconds, also when spool is idle
/// (glibc's malloc keeps each thread's arena at its high-water mark).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match spool::config_file::load(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            // --help, --version and bad flags: clap's own output and code.
            Ok(clap) => clap.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        },
    };
    init_logging(cli.log_format);
    let cfg = match cli.command {
        Some(Command::Serve(cfg)) => *cfg,
        None => cli.serve,
        Some(Command::Verify { dir, repair }) => {
            let clean = spool::cmd::verify(&dir.cache_dir, repair).await?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        Some(Command::Stats {
            dir,
            thresholds,
            bytes,
        }) => {
            return spool::cmd::stats(&dir.cache_dir, &thresholds, bytes).await;
        }
        Some(Command::Sign {
            url,
            directory,
            file,
            expires,
            signing,
            listen,
            remote,
        }) => {
            let scope = match (directory, file) {
                (true, _) => Some(spool::signing::Scope::Dir),
                (_, true) => Some(spool::signing::Scope::File),
                _ => None,
            };
            println!(
                "{}",
                spool::cmd::sign(&url, scope, expires, &signing, listen, &remote).await?
            );
            return Ok(());
        }
        Some(Command::Ls { media, remote, dir }) => {
            return spool::cmd::ls(&remote, &dir.cache_dir, media).await;
        }
        Some(Command::Pin { urls, remote }) => {
            let ok = spool::cmd::pin(&urls, true, &remote).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some(Command::Unpin { urls, remote }) => {
            let ok = spool::cmd::pin(&urls, false, &remote).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some(Command::Prefetch {
            urls,
            variant,
            detach,
            remote,
        }) => {
            let cached = spool::cmd::prefetch(&urls, &variant, &remote, detach).await?;
            std::process::exit(if cached { 0 } else { 1 });
        }
        Some(Command::Healthcheck {
            listen,
            admin_listen,
            timeout,
            ..
        }) => {
            let live = spool::cmd::healthcheck(listen, admin_listen.0, timeout).await;
            if let Err(e) = &live {
                eprintln!("spool is not live: {e:#}");
            }
            std::process::exit(if live.is_ok() { 0 } else { 1 });
        }
    };
    raise_fd_limit();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    // The server runs on a worker thread, not on this one: connections
    // accepted there start on the same worker, with no hand-over to a
    // sleeping thread on every request.
    tokio::spawn(spool::run(cfg, listener, shutdown_signal())).await?
}

/// Log lines to stderr: what SPOOL_LOG selects (default info), as text
/// (coloured only when stderr is a terminal, so log files hold no escape
/// codes) or one JSON object per line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("SPOOL_LOG")
        // Players hang up mid-body all the time (seeks, closing a tab):
        // warp logs each as a server error, which it is not.
        .unwrap_or_else(|_| EnvFilter::new("info,warp::server=off"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Raises the soft limit on open files to the hard limit: every player
/// connection, origin connection and chunk file holds one, and the default
/// soft limit (often 1024) is the first thing a busy spool runs into.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(to = ?limit.maximum, "raised the open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}
