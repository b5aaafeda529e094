//! One call's container lifecycle: create (hardened), attach, start, stream, wait, remove.
//!
//! [`Sandbox::execute`] is the whole path of an `execute_python` call below the protocol: it
//! checks the request, waits for a concurrency slot, runs the code in a fresh container under
//! the limits, and removes the container before answering, whatever happened. Nothing here
//! knows about MCP.

mod container;
mod output;
mod payload;
mod reaper;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use container::{LABEL_DEADLINE, LABEL_OWNER, SANDBOX_USER, container_spec};
pub use output::CappedBuffer;
pub use payload::ExecutionRequest;
pub use reaper::reap_expired;

use crate::config::SandboxConfig;
use crate::docker::{LazyDocker, classify};
use container::ContainerGuard;

/// Exit status Docker reports for a process killed by SIGKILL (timeout, OOM killer).
const KILLED: i64 = 137;

/// What one execution produced.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct ExecutionResult {
    /// Everything the program wrote to stdout (capped; see `truncated`).
    pub stdout: String,
    /// Everything the program wrote to stderr (capped; see `truncated`).
    pub stderr: String,
    /// The program's exit status; 137 when it was killed.
    pub exit_code: i64,
    /// True when the program ran past the time limit and was killed.
    pub timed_out: bool,
    /// True when the program was killed for using more memory than allowed.
    pub oom_killed: bool,
    /// True when output past the per-stream limit was dropped.
    pub truncated: bool,
    /// Time from the container's start to the program's end, in milliseconds.
    pub duration_ms: u64,
}

impl ExecutionResult {
    /// True when the program did not finish normally with status 0.
    pub fn failed(&self) -> bool {
        self.exit_code != 0 || self.timed_out || self.oom_killed
    }
}

/// Why an execution could not produce a result. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "request too large: {size} bytes of code and input, the limit is {limit} bytes \
         (raise it with --max-input / PYEXEC_MAX_INPUT)"
    )]
    RequestTooLarge { size: usize, limit: usize },
    #[error(
        "cannot reach Docker at {host} — is the daemon running? ({reason})\n\
         hint: start Docker, or set DOCKER_HOST to the daemon you use"
    )]
    DockerUnreachable { host: String, reason: String },
    #[error("image {image} not found — build it with: make image (or images/build.sh)")]
    ImageMissing { image: String },
    #[error("Docker could not {action}: {message}")]
    Docker {
        action: &'static str,
        message: String,
    },
    #[error("the call was cancelled; its container was removed")]
    Cancelled,
    #[error("the server is shutting down; the call was stopped")]
    ShuttingDown,
}

/// Runs code in fresh containers, one per call, at most `concurrency` at once.
pub struct Sandbox {
    /// The daemon connection, made on first use.
    docker: LazyDocker,
    /// Image, network, runtime and limits for every container.
    config: SandboxConfig,
    /// This server's identity, the value of every container's owner label.
    instance: String,
    /// Slots for containers; a slot is released only after its container is removed.
    permits: Arc<Semaphore>,
    /// Background removals, so shutdown can wait for them.
    cleanup: TaskTracker,
    /// Cancelled when the server shuts down: every running call stops.
    stopping: CancellationToken,
    /// Counter that makes container names unique within this instance.
    next_id: AtomicU64,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Self {
            docker: LazyDocker::default(),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config,
            instance,
            cleanup: TaskTracker::new(),
            stopping: CancellationToken::new(),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// This server instance's id, as found on its containers' owner label.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Connects to Docker, reaps expired containers and checks that the image exists, so
    /// problems show at start-up in the log instead of at the first call.
    pub async fn prepare(&self) -> Result<(), SandboxError> {
        let docker = self.docker.get().await?;
        if let Err(error) = reap_expired(docker, SystemTime::now()).await {
            tracing::warn!(%error, "could not list containers to reap");
        }
        docker
            .inspect_image(&self.config.image)
            .await
            .map_err(|e| classify(e, "inspect the image", &self.config.image))
            .map(|_| ())
    }

    /// Runs one request in a fresh container and removes the container before returning.
    pub async fn execute(
        &self,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
    ) -> Result<ExecutionResult, SandboxError> {
        let payload = request.encode(self.config.limits.max_input_bytes)?;
        let docker = self.docker.get().await?;
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => {
                permit.map_err(|_| SandboxError::ShuttingDown)?
            }
            _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
            _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
        };
        let name = format!(
            "mcp-python-executor-{}-{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let guard = ContainerGuard::new(docker.clone(), name, permit, self.cleanup.clone());
        let outcome = tokio::select! {
            result = self.run(docker, guard.name(), payload) => result,
            _ = cancel.cancelled() => Err(SandboxError::Cancelled),
            _ = self.stopping.cancelled() => Err(SandboxError::ShuttingDown),
        };
        let name = guard.name().to_string();
        if let Err(error) = guard.remove().await {
            tracing::warn!(container = %name, %error, "could not remove container");
        }
        outcome
    }

    /// Create, attach, start, stream the payload in and the output out, wait.
    async fn run(
        &self,
        docker: &Docker,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<ExecutionResult, SandboxError> {
        let image = &self.config.image;
        let limits = &self.config.limits;
        let spec = container_spec(&self.config, &self.instance, SystemTime::now());
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        docker
            .create_container(Some(options), spec)
            .await
            .map_err(|e| classify(e, "create the container", image))?;
        let attach = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let streams = docker
            .attach_container(name, Some(attach))
            .await
            .map_err(|e| classify(e, "attach to the container", image))?;
        docker
            .start_container(name, None)
            .await
            .map_err(|e| classify(e, "start the container", image))?;
        let started = Instant::now();

        let mut stdout = CappedBuffer::new(limits.max_output_bytes);
        let mut stderr = CappedBuffer::new(limits.max_output_bytes);
        let mut input = streams.input;
        let mut output = streams.output;
        let write = async move {
            // The program may exit without reading its stdin; a broken pipe is not an error.
            let _ = input.write_all(&payload).await;
            let _ = input.shutdown().await;
        };
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => stdout.push(&message),
                    Ok(LogOutput::StdErr { message }) => stderr.push(&message),
                    Ok(_) => {}
                    Err(error) => return Err(classify(error, "read the output", image)),
                }
            }
            Ok(())
        };
        let streamed = tokio::time::timeout(limits.timeout, drive_until(read, write)).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let timed_out = match streamed {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => true,
        };
        let (exit_code, oom_killed) = if timed_out {
            (KILLED, false)
        } else {
            self.exit_status(docker, name).await?
        };
        let truncated = stdout.truncated() || stderr.truncated();
        Ok(ExecutionResult {
            stdout: stdout.into_text(),
            stderr: stderr.into_text(),
            exit_code,
            timed_out,
            oom_killed,
            truncated,
            duration_ms,
        })
    }

    /// The exit code of a container whose output has ended, and whether the OOM killer hit it.
    async fn exit_status(&self, docker: &Docker, name: &str) -> Result<(i64, bool), SandboxError> {
        let image = &self.config.image;
        let code = match docker.wait_container(name, None).next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => return Err(classify(error, "wait for the container", image)),
            None => {
                return Err(SandboxError::Docker {
                    action: "wait for the container",
                    message: "the wait ended without a status".to_string(),
                });
            }
        };
        // Only a SIGKILL can be the OOM killer's; skip the extra round trip otherwise.
        if code != KILLED {
            return Ok((code, false));
        }
        let state = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| classify(e, "inspect the container", image))?
            .state;
        Ok((code, state.and_then(|s| s.oom_killed).unwrap_or(false)))
    }

    /// Stops every running call, then waits (up to `grace`) until all containers are removed.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        let all = self.config.concurrency as u32;
        let drained = async {
            let _ = self.permits.acquire_many(all).await;
            self.cleanup.close();
            self.cleanup.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace passed with containers still being removed");
        }
    }
}

/// Polls `read` to completion while also driving `write`, which may finish first or never.
async fn drive_until<R, W>(read: R, write: W) -> R::Output
where
    R: Future,
    W: Future<Output = ()>,
{
    let mut read = pin!(read);
    let mut write = pin!(write);
    let mut written = false;
    loop {
        tokio::select! {
            output = &mut read => return output,
            () = &mut write, if !written => written = true,
        }
    }
}
