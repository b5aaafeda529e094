//! The background tasks a serving server starts beside its transport (start-up checks and the
//! preinstall, following the environment tag, rereading the tokens file): one tracker and one
//! stop signal for all of them, so shutdown ends every one and knows when none is left. A
//! leaf; the sandbox keeps its own tracker for what must outlive a stop (removals).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tasks that run until they finish or the server stops, whichever comes first.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// Every task started here, to wait for at the end.
    tracker: TaskTracker,
    /// Cancelled at shutdown: each task is dropped at its next await.
    stop: CancellationToken,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or [`Background::stop`] is called.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Ends every task and waits until none is left (a task ends at its next await, so this
    /// is quick; what a task owned is dropped, and guards remove what they hold).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_loops_that_never_end_on_their_own() {
        let background = Background::new();
        background.spawn(std::future::pending());
        background.spawn(async {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        assert_eq!(background.running(), 2);
        background.stop().await;
        assert_eq!(background.running(), 0);
    }
}
