//! `spool healthcheck`: asks a running spool's `/health/live`, so a
//! container image can check its own health without curl.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::local_address;

/// Ok when spool at `listen` answers `/health/live` with 200 in time.
pub async fn healthcheck(listen: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let url = format!("http://{}/health/live", local_address(listen));
    // reqwest is built without a bundled crypto provider; only plain HTTP
    // is asked here, but the builder wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()?;
    let status = client.get(&url).send().await?.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
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
