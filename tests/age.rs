//! `--max-age` over real HTTP: media nobody read within it are evicted by
//! the upkeep, but not a pinned title's, not one a player has open, and a
//! media read again starts its age over. Reads reach the index in batches
//! (their times are written at the upkeep's checks and at shutdown).

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{cached_chunks, client, data, get, wait_for, wait_until_cached, Spool};

const KIB: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_not_read_within_max_age_are_evicted() {
    let origin = Origin::start().await;
    for name in ["old", "pinned", "again"] {
        origin.add_file(name, data(256 * KIB, name.len() as u64), "video/mp4");
    }
    // A player holds this one open, reading slowly.
    origin.add_file("open", data(4096 * KIB, 7), "video/mp4");
    origin.set_faults("open", Faults::throttled(64 * 1024));
    let spool = Spool::start_with(&origin, |c| c.max_age = Some(Duration::from_secs(3))).await;
    let c = client();
    for name in ["old", "pinned", "again"] {
        let u = origin.url(name);
        assert_eq!(get(&c, &spool.url(&u), None).await.0, 200);
        wait_until_cached(&spool.cache_dir, &u).await;
    }
    let mut holder = c.get(spool.url(&origin.url("open"))).send().await.unwrap();
    assert!(!holder.chunk().await.unwrap().unwrap().is_empty());
    wait_for("a chunk of the open media cached", || async {
        !cached_chunks(&spool.cache_dir, &origin.url("open")).is_empty()
    })
    .await;
    let r = c
        .post(format!("{}/api/pin", spool.admin()))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "url": origin.url("pinned") }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Read again halfway: its age starts over.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(get(&c, &spool.url(&origin.url("again")), None).await.0, 200);
    wait_for(
        "the media not read within --max-age to be evicted",
        || async { cached_chunks(&spool.cache_dir, &origin.url("old")).is_empty() },
    )
    .await;
    assert_eq!(
        cached_chunks(&spool.cache_dir, &origin.url("pinned")).len(),
        4,
        "a pinned title stays"
    );
    assert_eq!(
        cached_chunks(&spool.cache_dir, &origin.url("again")).len(),
        4,
        "read again: younger"
    );
    assert!(
        !cached_chunks(&spool.cache_dir, &origin.url("open")).is_empty(),
        "open: stays"
    );
    // The one read again goes once its new age passes; the open one once
    // its player left and its age passed.
    drop(holder);
    wait_for("the media read again to age out too", || async {
        cached_chunks(&spool.cache_dir, &origin.url("again")).is_empty()
    })
    .await;
    wait_for("the media no longer open to age out", || async {
        cached_chunks(&spool.cache_dir, &origin.url("open")).is_empty()
    })
    .await;
    assert_eq!(
        cached_chunks(&spool.cache_dir, &origin.url("pinned")).len(),
        4
    );
}

/// A warm read does not write the index per request: reads are recorded
/// in memory and written at the upkeep's checks, and the last ones at
/// shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_times_reach_the_index_in_batches_and_at_shutdown() {
    let origin = Origin::start().await;
    origin.add_file("warm", data(512 * KIB, 3), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.disk_check_interval = Duration::from_secs(3600)
    })
    .await;
    let c = client();
    let u = origin.url("warm");
    assert_eq!(get(&c, &spool.url(&u), None).await.0, 200);
    wait_until_cached(&spool.cache_dir, &u).await;
    let read_at = |dir: &std::path::Path| -> i64 {
        let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
        conn.query_row("SELECT MAX(last_access_unix) FROM chunks", [], |r| r.get(0))
            .unwrap()
    };
    let dir = spool.cache_dir.clone();
    let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
    conn.execute("UPDATE chunks SET last_access_unix = 1000", [])
        .unwrap();
    drop(conn);
    // Warm reads, many of them: no disk check comes in this test's time.
    for _ in 0..20 {
        let (status, _, body) = get(&c, &spool.url(&u), Some("bytes=0-99999")).await;
        assert_eq!((status, body.len()), (206, 100_000));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_at(&dir), 1000, "no index write per read");
    let (dir, _keep) = spool.stop().await;
    assert!(read_at(&dir) > 1000, "written at shutdown");
}

/// A warm read of a whole media costs the index a few write transactions
/// (its read times, bytes watched and the day's traffic, at the disk
/// checks), not one per chunk or request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_read_costs_the_index_a_handful_of_writes() {
    let origin = Origin::start().await;
    let chunks = 128;
    origin.add_file("film", data(chunks * 64 * KIB, 4), "video/mp4");
    // A check a second: however slow the machine, the reads below span
    // a few checks, not one per request.
    let spool =
        Spool::start_with(&origin, |c| c.disk_check_interval = Duration::from_secs(1)).await;
    let c = client();
    let u = origin.url("film");
    assert_eq!(get(&c, &spool.url(&u), None).await.0, 200);
    wait_until_cached(&spool.cache_dir, &u).await;
    common::wait_idle(&spool).await;
    let watched = |bytes: usize| {
        let dir = spool.cache_dir.clone();
        let u = u.clone();
        move || {
            let (dir, u) = (dir.clone(), u.clone());
            async move {
                let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
                conn.query_row("SELECT served_bytes FROM media WHERE url = ?1", [&u], |r| {
                    r.get::<_, i64>(0)
                })
                .is_ok_and(|b| b == bytes as i64)
            }
        }
    };
    wait_for("the cold read recorded", watched(chunks * 64 * KIB)).await;
    let commits = "spool_index_commits_total";
    // Two disk checks after it: what the cold read left is written, and
    // the metric counts it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = common::metric(&spool, commits).await;
    // The warm read: the whole file, and again in 16 ranges.
    assert_eq!(
        get(&c, &spool.url(&u), None).await.2.len(),
        chunks * 64 * KIB
    );
    for i in 0..16 {
        let r = format!("bytes={}-{}", i * 512 * KIB, (i + 1) * 512 * KIB - 1);
        assert_eq!(get(&c, &spool.url(&u), Some(&r)).await.0, 206);
    }
    wait_for("the warm reads recorded", watched(3 * chunks * 64 * KIB)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = common::metric(&spool, commits).await;
    let writes = after - before;
    // Fewer than one per request (scripts/index-writes measures the
    // figure: 3 for a 1 GiB file read whole and in 64 ranges).
    assert!(
        (1.0..17.0).contains(&writes),
        "{writes} index commits for 17 warm reads of {chunks} chunks"
    );
}
