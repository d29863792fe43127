//! Memory held for slow players, over real HTTP against the in-tree origin.
//!
//! The count of downloading chunks alive (`spool::testing::live_downloads`)
//! is process-wide, so this file is its own test binary and holds one test.

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{data, wait_for, Spool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A player on a raw connection whose receive buffer is small (so that
/// spool's side fills up as soon as the player stops reading).
struct Player {
    stream: TcpStream,
    /// Body bytes read so far.
    body: Vec<u8>,
    /// Body bytes to come in all.
    len: usize,
}

impl Player {
    /// Sends a GET for `range` of `url` and reads the response head.
    async fn open(spool: &Spool, url: &str, first: u64, last: u64) -> Player {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(spool.addr).await.unwrap();
        let path = &url[format!("http://{}", spool.addr).len()..];
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={first}-{last}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let end = loop {
            let mut buf = [0; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the response head");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 206"), "{head}");
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a content length")
            .trim()
            .parse()
            .unwrap();
        Player {
            stream,
            body: got[end..].to_vec(),
            len,
        }
    }

    /// Reads at least `n` body bytes (fewer at the body's end).
    async fn read(&mut self, n: usize) {
        let want = self.body.len().saturating_add(n).min(self.len);
        let mut buf = vec![0; 64 * 1024];
        while self.body.len() < want {
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "body cut at {} of {}", self.body.len(), self.len);
            self.body.extend_from_slice(&buf[..n]);
        }
    }
}

/// Players that stop reading in the middle of a downloading chunk do not
/// keep its buffers once it is written: the download is freed, and when
/// they read on they get the rest from the chunk file, every byte right.
/// (Each such player used to hold its chunk's buffers for as long as it
/// took, so memory grew with slow players.)
#[tokio::test]
async fn stalled_players_do_not_hold_a_written_chunk() {
    const CHUNK: u64 = 16 << 20;
    let origin = Origin::start().await;
    let file = data((CHUNK + (1 << 20)) as usize, 71);
    origin.add_file("slow", file.clone(), "video/mp4");
    // Slow enough that every player finds the chunk still downloading.
    origin.set_faults("slow", Faults::throttled(64 << 20));
    let spool = Spool::start_with(&origin, |c| c.chunk_size = CHUNK).await;
    let url = spool.url(&origin.url("slow"));
    // Three players inside the first chunk, each asking for more than the
    // socket buffers between it and spool hold; each reads a little and
    // stops.
    let mut players = Vec::new();
    for first in [0, 1 << 20, 2 << 20] {
        let mut p = Player::open(&spool, &url, first, CHUNK - 1).await;
        p.read(1).await;
        if first == 0 {
            // Its first byte came from the download, which cannot be
            // written before the rest of its 16 MiB came too.
            assert!(spool::testing::live_downloads() >= 1);
        }
        players.push(p);
    }
    wait_for("the chunk to be written", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("slow")) == [0]
    })
    .await;
    wait_for("the written chunk's download to be freed", || async {
        spool::testing::live_downloads() == 0
    })
    .await;
    for (p, first) in players.iter_mut().zip([0usize, 1 << 20, 2 << 20]) {
        p.read(usize::MAX).await;
        assert!(
            p.body[..] == file[first..CHUNK as usize],
            "bytes from {first}"
        );
    }
    let from_file = common::metric(&spool, "spool_served_bytes_total{source=\"cache\"}").await;
    assert!(from_file > 0.0, "the players read on from the chunk file");
    // Not a time limit: only so that a hang fails the test.
    let _ = tokio::time::timeout(Duration::from_secs(10), spool.stop()).await;
}
