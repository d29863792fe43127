//! `spool healthcheck`: asks a running spool's `/health/live`, so a
//! container image can check its own health without curl.
//!
//! It asks the control plane first: a listener of its own, with its own
//! connection limits, so a flood that fills the media listener's
//! `--max-connections` does not make a healthy spool look dead to its
//! orchestrator. When the control plane is off or does not answer, the
//! media listener is asked.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::local_address;

/// Ok when spool answers `/health/live` with 200 in time: on its control
/// plane at `admin` if given, else (or if that cannot be reached) on its
/// media listener at `listen`.
pub async fn healthcheck(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    timeout: Duration,
) -> anyhow::Result<()> {
    // reqwest is built without a bundled crypto provider; only plain HTTP
    // is asked here, but the builder wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()?;
    let ask = |addr: SocketAddr| {
        let url = format!("http://{}/health/live", local_address(addr));
        let client = client.clone();
        async move {
            let status = client.get(&url).send().await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok::<_, anyhow::Error>(())
        }
    };
    if let Some(admin) = admin {
        match ask(admin).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "the control plane did not answer; asking the media listener")
            }
        }
    }
    ask(listen).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(local_address(a("0.0.0.0:8080")), a("127.0.0.1:8080"));
        assert_eq!(local_address(a("[::]:8080")), a("[::1]:8080"));
        assert_eq!(local_address(a("10.0.0.2:81")), a("10.0.0.2:81"));
    }
}
