//! Real players against spool: ffmpeg, mpv and headless Chromium, each
//! reading through spool from the in-tree origin on loopback.
//!
//! Not part of the fast suite: `scripts/test-players` installs the players
//! and runs this target (`cargo test --features players --test players`).
//! One module per area.

mod cdp;
#[path = "../common/mod.rs"]
mod common;
mod tools;

mod boundary;
mod browser;
mod browser_hls;
mod decode;
mod hls;
mod seek;
mod status_page;
