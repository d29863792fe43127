//! A small Chrome DevTools Protocol driver: headless Chromium started for
//! one test, one page driven over the DevTools websocket.
//!
//! - [`Browser::launch`] starts `chromium --headless=new` with its own
//!   profile in a temp directory and `--remote-debugging-port=0`, reads the
//!   port from `<profile>/DevToolsActivePort`, connects to the browser's
//!   websocket and attaches to its page (flat sessions: one connection).
//! - [`Browser::navigate`], [`Browser::evaluate`] (`Runtime.evaluate`,
//!   promises awaited, results by value), [`Browser::screenshot`]
//!   (`Page.captureScreenshot`, into `target/players-artifacts/`).
//! - The page's console messages, uncaught exceptions and log entries are
//!   kept; [`Browser::fail`] panics with them (and a screenshot), so a
//!   failing test says what the page saw.
//! - Every wait is bounded: a browser that hangs fails its test. Dropping
//!   the `Browser` kills its whole process group (renderers, GPU and
//!   zygote processes included).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::tools::artifacts_dir;

/// Time for Chromium to start and open its DevTools port.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Time for one DevTools command to answer (an `evaluate` whose promise
/// waits for the page may take up to this long).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

type Reply = Result<Value, String>;

/// One command for the connection task: the message (with its id) and
/// where its answer goes.
struct Call {
    id: u64,
    message: Value,
    reply: oneshot::Sender<Reply>,
}

/// A headless Chromium and its one page.
pub struct Browser {
    /// Used in artifact file names.
    name: String,
    child: tokio::process::Child,
    calls: mpsc::UnboundedSender<Call>,
    next_id: std::sync::atomic::AtomicU64,
    /// The page's session (flat protocol: commands carry `sessionId`).
    session: String,
    /// Console messages, exceptions and log entries of the page.
    log: Arc<Mutex<Vec<String>>>,
    connection: tokio::task::JoinHandle<()>,
    /// Chromium's own stderr.
    stderr_file: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium for the test `name` and attaches to its page.
    pub async fn launch(name: &str) -> Browser {
        Browser::launch_with(name, &[]).await
    }

    /// [`Browser::launch`] with extra command line switches (e.g.
    /// `--host-resolver-rules=…`).
    pub async fn launch_with(name: &str, extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
        let stderr_file = artifacts_dir().join(format!("{name}.chromium.log"));
        let stderr = std::fs::File::create(&stderr_file)
            .unwrap_or_else(|e| panic!("create {}: {e}", stderr_file.display()));
        let mut cmd = tokio::process::Command::new("chromium");
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--no-sandbox",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
            // Containers: no GPU, a small /dev/shm, no session bus.
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // A page nobody looks at must not be slowed down.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--window-size=800,600",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // Its own process group, so that dropping the browser ends every
        // process it started.
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run chromium (scripts/test-players installs it): {e}")
        });

        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let ws_url = loop {
            // The file is written once the port is open: its port line and
            // the browser websocket's path.
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "chromium exited ({status}) before opening its DevTools port:\n{}",
                    tail(&stderr_file)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "chromium did not open its DevTools port within {START_LIMIT:?}:\n{}",
                    tail(&stderr_file)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio::time::timeout(START_LIMIT, tokio_tungstenite::connect_async(&ws_url))
            .await
            .unwrap_or_else(|_| panic!("no websocket handshake from chromium at {ws_url}"))
            .unwrap_or_else(|e| panic!("connect to chromium at {ws_url}: {e}"));

        let log = Arc::new(Mutex::new(Vec::new()));
        let (calls, rx) = mpsc::unbounded_channel();
        let connection = tokio::spawn(connection(ws, rx, log.clone()));
        let mut browser = Browser {
            name: name.to_owned(),
            child,
            calls,
            next_id: 1.into(),
            session: String::new(),
            log,
            connection,
            stderr_file,
            _profile: profile,
        };

        // The page Chromium opened with about:blank (or a new one).
        let targets = browser.browser_call("Target.getTargets", json!({})).await;
        let page = targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .map(|t| t["targetId"].clone());
        let target = match page {
            Some(id) => id,
            None => browser
                .browser_call("Target.createTarget", json!({"url": "about:blank"}))
                .await["targetId"]
                .clone(),
        };
        let attached = browser
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("Target.attachToTarget gives a sessionId")
            .to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Inspector.enable",
        ] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Opens `url` in the page and waits until it has loaded.
    pub async fn navigate(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(err) = r["errorText"].as_str() {
            self.fail(&format!("navigating to {url}: {err}")).await;
        }
        let deadline = tokio::time::Instant::now() + COMMAND_LIMIT;
        loop {
            let state = self
                .try_evaluate("[document.readyState, location.href]")
                .await;
            if let Ok(v) = &state {
                if v[0] == "complete" && v[1] == url {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                self.fail(&format!("{url} did not load ({state:?})")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `url` like a person following a link: Chromium's error when
    /// it did not become the page (a download, a refused navigation), or
    /// None once it loaded.
    pub async fn open(&self, url: &str) -> Option<String> {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(err) = r["errorText"].as_str() {
            return Some(err.to_owned());
        }
        let deadline = tokio::time::Instant::now() + COMMAND_LIMIT;
        loop {
            let state = self.try_evaluate("document.readyState").await;
            if state.as_ref().is_ok_and(|v| v == "complete") {
                return None;
            }
            if tokio::time::Instant::now() >= deadline {
                self.fail(&format!("{url} did not load ({state:?})")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Turns Chromium's HTTP cache off for the page, so that each request
    /// reaches the server (timings compare like with like).
    pub async fn disable_cache(&self) {
        self.call("Network.enable", json!({})).await;
        self.call("Network.setCacheDisabled", json!({"cacheDisabled": true}))
            .await;
    }

    /// Evaluates `expression` in the page (a promise is awaited) and returns
    /// its value; fails the test (with the console) when it throws.
    pub async fn evaluate(&self, expression: &str) -> Value {
        match self.try_evaluate(expression).await {
            Ok(v) => v,
            Err(e) => self.fail(&format!("the page threw: {e}")).await,
        }
    }

    /// Evaluates `expression` (a promise is awaited): its value, or what it
    /// threw (the exception's description).
    pub async fn try_evaluate(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await
            .map_err(|e| format!("Runtime.evaluate: {e}"))?;
        if let Some(ex) = r.get("exceptionDetails") {
            let what = ex["exception"]["description"]
                .as_str()
                .or_else(|| ex["exception"]["value"].as_str())
                .or_else(|| ex["text"].as_str())
                .unwrap_or("an exception");
            return Err(what.to_owned());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Saves a PNG of the page as `target/players-artifacts/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot data is base64");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// What the page logged so far: console messages, uncaught exceptions,
    /// log entries (e.g. a blocked CORS request).
    pub fn console(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Fails the test with `what`, the page's console and a screenshot
    /// (when the browser still answers).
    pub async fn fail(&self, what: &str) -> ! {
        let shot = match tokio::time::timeout(
            Duration::from_secs(10),
            self.try_call("Page.captureScreenshot", json!({"format": "png"})),
        )
        .await
        {
            Ok(Ok(r)) => r["data"]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .and_then(|png| {
                    let path = artifacts_dir().join(format!("{}-failure.png", self.name));
                    std::fs::write(&path, png).ok().map(|_| path)
                }),
            _ => None,
        };
        panic!(
            "{what}\n--- page console ---\n{}\n--- screenshot: {} ; chromium log: {} ---",
            self.console().join("\n"),
            shot.map_or("none".into(), |p| p.display().to_string()),
            self.stderr_file.display()
        );
    }

    /// A command to the page's session; fails the test on an error.
    async fn call(&self, method: &str, params: Value) -> Value {
        match self.try_call(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!(
                "{method}: {e}\n--- page console ---\n{}",
                self.console().join("\n")
            ),
        }
    }

    async fn try_call(&self, method: &str, params: Value) -> Reply {
        self.send(method, params, Some(&self.session)).await
    }

    /// A command to the browser itself (no session).
    async fn browser_call(&self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    async fn send(&self, method: &str, params: Value, session: Option<&str>) -> Reply {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call { id, message, reply })
            .map_err(|_| "the DevTools connection is closed".to_owned())?;
        match tokio::time::timeout(COMMAND_LIMIT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the DevTools connection closed".into()),
            Err(_) => Err(format!("no answer within {COMMAND_LIMIT:?}")),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.connection.abort();
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

/// The connection task: sends commands, routes answers to their callers
/// and keeps the page's console and exceptions.
async fn connection(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut calls: mpsc::UnboundedReceiver<Call>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let (mut sink, mut stream) = ws.split();
    let mut pending: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { return };
                if sink.send(Message::text(call.message.to_string())).await.is_err() {
                    let _ = call.reply.send(Err("cannot send to chromium".into()));
                    return;
                }
                pending.insert(call.id, call.reply);
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = v["id"].as_u64() {
                    if let Some(reply) = pending.remove(&id) {
                        let r = match v.get("error") {
                            Some(e) => Err(e["message"].as_str().unwrap_or("error").to_owned()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = reply.send(r);
                    }
                } else if let Some(line) = event_line(&v) {
                    log.lock().unwrap().push(line);
                }
            }
        }
    }
    for (_, reply) in pending {
        let _ = reply.send(Err("chromium closed the DevTools connection".into()));
    }
}

/// A readable line for the events worth keeping.
fn event_line(v: &Value) -> Option<String> {
    let p = &v["params"];
    match v["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = p["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| match &a["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => a["description"].as_str().unwrap_or("").to_owned(),
                    other => other.to_string(),
                })
                .collect();
            Some(format!(
                "console.{}: {}",
                p["type"].as_str()?,
                args.join(" ")
            ))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let what = d["exception"]["description"]
                .as_str()
                .or_else(|| d["text"].as_str())
                .unwrap_or("");
            Some(format!("uncaught: {what}"))
        }
        "Log.entryAdded" => {
            let e = &p["entry"];
            Some(format!(
                "log.{} ({}): {} {}",
                e["level"].as_str()?,
                e["source"].as_str().unwrap_or(""),
                e["text"].as_str().unwrap_or(""),
                e["url"].as_str().unwrap_or("")
            ))
        }
        "Inspector.targetCrashed" => Some("the page crashed".into()),
        _ => None,
    }
}

/// The last lines of a log file, for a failure message.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
