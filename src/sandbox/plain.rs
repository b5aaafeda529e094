//! A plain call: one request in a fresh container, a warm one from the pool if one is ready,
//! else its own, removed right after the answer on every path.
//!
//! The path of an `execute_python` call without a session below the protocol: the request's
//! size is checked, the call waits for a concurrency slot ([`Slots`]), its payload is framed,
//! the container is taken from the pool or started ([`Launcher::start_execution`]), and the
//! output is streamed into the call's capped [`Output`] until the runner's trailers say the
//! program is over.

use std::sync::Arc;
use std::time::Duration;

use bollard::container::AttachContainerResults;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::guard::ContainerGuard;
use super::launcher::{Launcher, Removal};
use super::payload::ExecutionRequest;
use super::pool::{Pool, RefillAfter, Warm};
use super::protocol::MANIFEST_MAX;
use super::slots::Slots;
use super::stream::{Delivery, stream_and_wait};
use super::types::{ExecutionResult, Output, SandboxError, Stream};
use crate::metrics::Metrics;

/// What a plain call uses of the sandbox.
pub(super) struct PlainCall<'a> {
    pub launcher: &'a Launcher,
    pub slots: &'a Slots,
    pub pool: &'a Pool,
    pub metrics: &'a Metrics,
    /// The image new executions start from, read once the call has its slot.
    pub current_image: &'a (dyn Fn() -> Arc<str> + Send + Sync),
}

impl PlainCall<'_> {
    /// Runs `request`, giving each chunk of output to `live` as it arrives (it must not wait).
    ///
    /// A warm container that died while idle (Docker restarted, removed by hand) is never
    /// taken (`Pool::take` checks its stream), so a warm call is not retried cold: once the
    /// payload is written the program may have run, and running it twice would be a surprise.
    pub async fn run(
        &self,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<ExecutionResult, SandboxError> {
        let config = self.launcher.config();
        // Refused before it waits; framed only once it has a slot, so a waiting call holds no
        // copy of its code.
        request.check_size(config.limits.max_input_bytes)?;
        let permit = self.slots.acquire(cancel, request.size()).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let files_budget = config.outputs.max_files_bytes;
        let payload = request.encode(config.limits.max_input_bytes, &token, files_budget)?;
        let image = (self.current_image)();
        // Whichever path the call takes, the pool refills after it, never during it.
        let _refill = RefillAfter(self.pool);
        let (guard, streams) = self.take_or_start(&image, permit, cancel).await?;
        let limits = &config.limits;
        let launcher = self.launcher;
        launcher
            .in_container(guard, Removal::Background, cancel, async |docker, guard| {
                let name = guard.name();
                let mut output = Output::new(limits.max_output_bytes);
                let delivery = Delivery {
                    payload: &payload,
                    timeout: limits.timeout,
                    token: Some(&token),
                    max_bundle: files_budget + MANIFEST_MAX,
                };
                let outcome =
                    stream_and_wait(docker, name, &image, streams, delivery, &mut |s, b| {
                        output.push(s, b);
                        live(s, b);
                    })
                    .await?;
                let mut result = output.finish(outcome, files_budget);
                result.egress = guard.egress().map(|e| e.report());
                Ok(result)
            })
            .await
    }

    /// A warm container of `image` if the pool has one ready (the call's slot moves onto it),
    /// else the call's own, started under its cancel and shutdown.
    async fn take_or_start(
        &self,
        image: &str,
        permit: OwnedSemaphorePermit,
        cancel: &CancellationToken,
    ) -> Result<(ContainerGuard, AttachContainerResults), SandboxError> {
        let warm = self.pool.take(image);
        self.metrics.pool(warm.is_some());
        match warm {
            Some(Warm {
                mut guard, streams, ..
            }) => {
                guard.hold(permit);
                Ok((guard, streams))
            }
            None => {
                // Started under the call's cancel and shutdown like the rest of the call; the
                // guard (holding the slot) exists before the create, so a cut-short start is
                // still removed before the slot frees.
                let starting = self
                    .launcher
                    .start_execution(image, Duration::ZERO, Some(permit));
                tokio::select! {
                    started = starting => started,
                    _ = cancel.cancelled() => Err(SandboxError::Cancelled),
                    _ = self.launcher.stopping().cancelled() => Err(SandboxError::ShuttingDown),
                }
            }
        }
    }
}
