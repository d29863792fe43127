//! The tasks spool starts for players, owned so that shutdown ends them.
//!
//! Connections, response bodies and download runs are spawned tasks: left
//! detached, they would outlive `serve` (with the chunk writer already
//! closed) until the process exits, and a library user calling
//! `spool::run` would find them still running after it returned. Each is
//! spawned here instead: at shutdown `cut` ends every one of them at its
//! next await (a cancelled run leaves nothing half-written: only complete
//! chunks are ever written, and the writer finishes or discards those under
//! way), and `wait` returns once they are all gone.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl Tasks {
    /// Runs `fut` until it ends or shutdown cuts it.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = fut => {}
                () = cut.cancelled() => {}
            }
        })
    }

    /// Ends every task at its next await.
    pub fn cut(&self) {
        self.cut.cancel();
    }

    /// Waits (at most `limit`) until every task ended; true when they did.
    pub async fn wait(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_ends_every_task() {
        let tasks = Tasks::default();
        for _ in 0..3 {
            tasks.spawn(std::future::pending());
        }
        tasks.spawn(async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), 3);
        assert!(!tasks.wait(Duration::from_millis(50)).await);
        tasks.cut();
        assert!(tasks.wait(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
    }
}
