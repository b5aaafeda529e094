//! The warm pool: containers created, attached and started ahead of time, each running the
//! runner blocked on stdin, so a call skips create + attach + start (most of a cold call).
//!
//! A warm container is still used for exactly one call: [`Pool::take`] hands it over and the
//! call's guard removes it afterwards, exactly as on the cold path. Hardening, limits and
//! results are the same because the container comes from the same `container_spec`; only its
//! deadlines are longer by the pool's max age, the most it may wait before it is replaced.
//! The pool never makes a call wait: an empty pool (or one holding containers of an image that
//! is no longer current) means the call starts its own container. One background task
//! ([`keep_full`]) refills it, replaces containers past their max age or of a superseded
//! image, backs off while Docker fails, and drains it at shutdown. Idle containers hold no
//! concurrency slot; a call's slot moves onto the container it takes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::AttachContainerResults;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;

use super::guard::ContainerGuard;
use super::launcher::Launcher;
use super::types::SandboxError;
use crate::settings::PoolConfig;

/// Longest pause between refill attempts while Docker keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A started container waiting for its one payload.
pub(super) struct Warm {
    /// Owns the container: dropping a `Warm` removes it.
    pub guard: ContainerGuard,
    /// The attach streams opened before start: stdin for the payload, the output.
    pub streams: AttachContainerResults,
    /// The image it was started from.
    pub image: Arc<str>,
    /// When it was started.
    pub born: Instant,
}

impl Warm {
    /// Whether the container is still waiting for its payload. An idle runner prints nothing,
    /// so anything already on its output stream (the end of it, above all: the container was
    /// killed, removed, or Docker restarted) means it cannot take a call. One poll that does
    /// not wait: no Docker request.
    fn alive(&mut self) -> bool {
        self.streams.output.as_mut().next().now_or_never().is_none()
    }
}

/// The idle warm containers, oldest first.
pub(super) struct Pool {
    /// Size and max age.
    config: PoolConfig,
    /// Containers ready to take.
    idle: Mutex<VecDeque<Warm>>,
    /// Wakes the refill task: a container was taken, or the current image changed.
    wake: Notify,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Containers ready to take right now.
    pub fn ready(&self) -> usize {
        self.idle().len()
    }

    /// A warm container of `image` young enough to run a whole call, if there is one. Stale
    /// containers met on the way are removed. The caller wakes the refill task ([`Pool::wake`])
    /// once its call is over, so a refill never competes with the call for the CPU.
    pub fn take(&self, image: &str) -> Option<Warm> {
        if self.config.size == 0 {
            return None;
        }
        let mut idle = self.idle();
        while let Some(mut warm) = idle.pop_front() {
            if self.usable(&warm, image) && warm.alive() {
                return Some(warm);
            }
            // Stale or dead: dropping it removes it.
        }
        None
    }

    /// Tells the refill task to look again (a call that took a container is over, or the
    /// current image changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn usable(&self, warm: &Warm, image: &str) -> bool {
        &*warm.image == image && warm.born.elapsed() < self.config.max_age
    }

    /// Removes the containers that are too old or of another image; returns how many are left.
    fn evict(&self, image: &str) -> usize {
        let mut idle = self.idle();
        idle.retain(|warm| self.usable(warm, image));
        idle.len()
    }

    /// Time until the oldest idle container reaches its max age.
    fn next_expiry(&self) -> Duration {
        self.idle()
            .front()
            .map(|oldest| self.config.max_age.saturating_sub(oldest.born.elapsed()))
            .unwrap_or(self.config.max_age)
    }

    /// Removes every idle container.
    fn drain(&self) {
        let drained: Vec<Warm> = self.idle().drain(..).collect();
        drop(drained);
    }
}

/// The refill task: keeps `size` warm containers of the current image (`current_image`)
/// until shutdown.
pub(super) async fn keep_full(
    launcher: &Launcher,
    pool: &Pool,
    current_image: &(dyn Fn() -> Arc<str> + Send + Sync),
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let image = current_image();
        let mut ready = pool.evict(&image);
        let mut failed = false;
        while ready < pool.config.size && current_image() == image {
            let warming = warm_one(launcher, pool, image.clone());
            let warmed = tokio::select! {
                warmed = warming => warmed,
                _ = launcher.stopping().cancelled() => break,
            };
            match warmed {
                Ok(warm) => {
                    pool.idle().push_back(warm);
                    ready += 1;
                    backoff = Duration::from_secs(1);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "could not warm a container");
                    failed = true;
                    break;
                }
            }
        }
        let pause = if failed {
            let pause = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            pause
        } else {
            pool.next_expiry()
        };
        tokio::select! {
            _ = pool.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = launcher.stopping().cancelled() => break,
        }
    }
    pool.drain();
}

/// Creates, attaches and starts one container that may wait up to the max age for a call.
async fn warm_one(launcher: &Launcher, pool: &Pool, image: Arc<str>) -> Result<Warm, SandboxError> {
    let (guard, streams) = launcher
        .start_execution(&image, pool.config.max_age, None)
        .await?;
    Ok(Warm {
        guard,
        streams,
        image,
        born: Instant::now(),
    })
}

/// Wakes the pool's refill task when dropped, whichever way the call ended.
pub(super) struct RefillAfter<'a>(pub &'a Pool);

impl Drop for RefillAfter<'_> {
    fn drop(&mut self) {
        self.0.wake();
    }
}
