//! ffmpeg decodes through spool exactly what it decodes from the origin,
//! cold and warm, whole and from a seek.

use crate::common::{origin::Origin, Spool};
use crate::tools::{decoded_md5, make_video};

#[tokio::test]
async fn ffmpeg_decodes_the_same_through_spool_cold_and_warm() {
    let dir = tempfile::tempdir().unwrap();
    let moov_at_end = make_video(
        dir.path(),
        "end.mp4",
        6,
        &["-c:v", "libx264", "-c:a", "aac"],
    )
    .await;
    let origin = Origin::start().await;
    origin.add_disk_file("/end.mp4", moov_at_end, "video/mp4");
    let spool = Spool::start(&origin).await;
    let direct_url = origin.url("/end.mp4");
    let via = spool.url(&direct_url);

    let direct = decoded_md5(&direct_url, &[]).await;
    let cold = decoded_md5(&via, &[]).await;
    assert_eq!(cold, direct, "cold decode through spool");
    origin.reset_stats();
    let warm = decoded_md5(&via, &[]).await;
    assert_eq!(warm, direct, "warm decode through spool");
    assert_eq!(
        origin.stats().body_bytes,
        0,
        "a warm replay costs the origin nothing"
    );

    let seek_direct = decoded_md5(&direct_url, &["-ss", "3"]).await;
    let seek_via = decoded_md5(&via, &["-ss", "3"]).await;
    assert_eq!(seek_via, seek_direct, "decode from a seek");
}
