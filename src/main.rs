use clap::Parser;
use spool::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SPOOL_LOG")
                // Players hang up mid-body all the time (seeks, closing a
                // tab): warp logs each as a server error, which it is not.
                .unwrap_or_else(|_| EnvFilter::new("info,warp::server=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = match cli.command {
        Some(Command::Serve(cfg)) => *cfg,
        None => cli.serve,
        Some(Command::Verify { dir, repair }) => {
            let clean = spool::cmd::verify(&dir.cache_dir, repair).await?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        Some(Command::Stats { dir, thresholds }) => {
            return spool::cmd::stats(&dir.cache_dir, &thresholds).await;
        }
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    spool::run(cfg, listener, shutdown_signal()).await
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
