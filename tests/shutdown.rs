//! Shutdown owns what it started: through the library entry, `serve`
//! returns with no connection, response body, download or read-ahead of
//! it still running, even when a player stopped reading and a slow origin
//! is mid-transfer at the deadline.

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{data, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_with_nothing_of_it_running() {
    let origin = Origin::start().await;
    origin.add_file("slow", data(16 << 20, 61), "video/mp4");
    origin.set_faults("slow", Faults::throttled(1 << 20));
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = test_config(tmp.path(), &origin);
    cfg.shutdown_timeout = Duration::from_millis(300);
    let media = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = media.local_addr().unwrap();
    let server = spool::Server::new(cfg).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = spool::Listeners { media, admin: None };
    let task = tokio::spawn(server.clone().serve_on(listeners, async {
        let _ = stopped.await;
    }));
    // A player that reads a little of a slow stream, then stops reading
    // (its read-ahead runs on meanwhile).
    let enc: String = url::form_urlencoded::byte_serialize(origin.url("slow").as_bytes()).collect();
    let mut player = tokio::net::TcpStream::connect(addr).await.unwrap();
    player
        .write_all(format!("GET /stream?url={enc} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < 700 * 1024 {
        n += player.read(&mut got[n..]).await.unwrap();
    }
    assert!(
        server.running_tasks() > 0,
        "a connection and its stream run"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert_eq!(
        server.running_tasks(),
        0,
        "nothing of the server still runs"
    );
    // The player's connection was closed...
    let closed = async {
        loop {
            match player.read(&mut got).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the player's connection closed");
    // ... and no transfer from the origin goes on.
    let before = origin.stats().body_bytes;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(origin.stats().body_bytes, before, "the origin still sends");
}
