//! The execution slots: at most `--concurrency` containers run calls at once, and the calls
//! waiting for a slot (or a session's turn, or the preinstall) wait in the bounded queue
//! (`queue.rs`), else are answered busy at once.
//!
//! A slot is a semaphore permit; a call's permit moves onto its container's guard, so a slot
//! frees only once the container is removed. Waiting for every permit is how `settle` and
//! shutdown know that no call runs and no container of a call is left.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::queue::{Full, Place, Queue};
use super::types::SandboxError;

/// The slots for execution containers and the queue of calls waiting for one.
pub struct Slots {
    /// Slots for execution containers; a slot frees only after its container is removed.
    permits: Arc<Semaphore>,
    /// How many slots there are (`--concurrency`).
    concurrency: usize,
    /// Calls waiting for their turn (at most `--max-queue`, holding at most
    /// `--max-queue-bytes`).
    queue: Queue,
    /// Cancelled when the server shuts down: a waiting call gives up.
    stopping: CancellationToken,
}

impl Slots {
    pub fn new(
        concurrency: usize,
        max_queue: usize,
        max_queue_bytes: usize,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queue: Queue::new(max_queue, max_queue_bytes),
            stopping,
        }
    }

    /// Takes a concurrency slot for a call holding `size` bytes, waiting for one only while
    /// the queue has room for it (else the server is busy, said at once); gives up on cancel or
    /// shutdown.
    pub async fn acquire(
        &self,
        cancel: &CancellationToken,
        size: usize,
    ) -> Result<OwnedSemaphorePermit, SandboxError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _place = self.wait_place(size)?;
        tokio::select! {
            permit = self.permits.clone().acquire_owned() => {
                permit.map_err(|_| SandboxError::ShuttingDown)
            }
            _ = cancel.cancelled() => Err(SandboxError::Cancelled),
            _ = self.stopping.cancelled() => Err(SandboxError::ShuttingDown),
        }
    }

    /// A place among the waiting calls for one holding `size` bytes of code and input, held
    /// while it waits for anything (a slot, a session's turn, the preinstall); busy when the
    /// queue is full in calls or in bytes.
    pub fn wait_place(&self, size: usize) -> Result<Place<'_>, SandboxError> {
        self.queue.enter(size).map_err(|full| match full {
            Full::Calls { max } => SandboxError::Busy {
                waiting: max,
                slots: self.concurrency,
            },
            Full::Bytes { held, max } => SandboxError::BusyBytes { held, size, max },
        })
    }

    /// Slots in use now.
    pub fn busy(&self) -> usize {
        self.concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// Calls waiting now, and the bytes they hold.
    pub fn waiting(&self) -> (usize, usize) {
        (self.queue.calls(), self.queue.bytes())
    }

    /// Waits until every slot is free: no call is running and every call's container has
    /// been removed.
    pub async fn settle(&self) {
        let all = self.concurrency as u32;
        let _ = self.permits.acquire_many(all).await;
    }
}
