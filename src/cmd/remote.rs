//! Talking to a running spool's control plane (`--admin-listen`) from the
//! shell (`spool ls`, `spool prefetch`, `spool sign`).

use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;

use crate::config::{local_address, Remote};

/// A running spool's admin API.
pub(crate) struct Api {
    pub base: String,
    client: reqwest::Client,
    token: Option<String>,
}

/// What a request to the API found.
pub(crate) enum Answer {
    /// No spool answers at that address (nothing listens, or it does not
    /// answer in time).
    Nobody(String),
    Json(StatusCode, serde_json::Value),
}

impl Api {
    pub fn new(remote: &Remote) -> anyhow::Result<Api> {
        // reqwest is built without a bundled crypto provider; only plain
        // HTTP is asked here, but the builder wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        let addr = remote.admin_listen.0.ok_or_else(|| {
            anyhow::anyhow!(
                "the control plane is off (--admin-listen / SPOOL_ADMIN_LISTEN is empty)"
            )
        })?;
        Ok(Api {
            base: format!("http://{}", local_address(addr)),
            client,
            token: remote
                .admin_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_timeout() => {
                return Ok(Answer::Nobody(format!("no spool answers at {}", self.base)))
            }
            Err(e) => return Err(e).context(format!("asking spool at {}", self.base)),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "spool at {} wants the admin token: set SPOOL_ADMIN_TOKEN (or --admin-token)",
                self.base
            );
        }
        let json = serde_json::from_str(&text).with_context(|| {
            format!(
                "spool at {} answered {status} without JSON (an older spool?): {}",
                self.base,
                text.trim()
            )
        })?;
        Ok(Answer::Json(status, json))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Answer> {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(req).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }
}

/// The reason in an error answer.
pub(crate) fn reason(status: StatusCode, json: &serde_json::Value) -> String {
    let why = json
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("no reason given");
    format!("{status}: {why}")
}
