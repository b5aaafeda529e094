//! One call's container lifecycle: create (hardened), attach, start, stream, wait, remove.
//!
//! [`Sandbox::execute`] is the whole path of an `execute_python` call below the protocol: it
//! checks the request, waits for a concurrency slot, runs the code in a fresh container under
//! the limits, and removes the container before answering, whatever happened. Sessions
//! (`session.rs`) are the one exception to "a container per call": one container runs the
//! calls of one session. Nothing here knows about MCP.

mod container;
mod files;
mod liveness;
mod output;
mod payload;
mod pool;
mod queue;
mod reaper;
mod session;
mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::container::AttachContainerResults;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::labels::{LABEL_DEADLINE, LABEL_INSTALL, LABEL_OWNER, LABEL_SESSION};
pub use container::{CALL_UIDS, InstallTarget, container_spec, install_spec, session_spec};
pub use files::{FileKind, LeftOut, Returned, ReturnedFile};
pub use output::{CappedBuffer, Omitted, Text, complete_prefix_len, fit_both};
pub use payload::{Bundle, ExecutionRequest, MAX_INPUT_LINES, StdinLines};
pub use queue::Place as WaitPlace;
pub use reaper::{deadline, labelled_containers, reap_expired};
pub use session::{INTERRUPT_GRACE, SessionEnd, SessionInfo, SessionOutcome};
pub use stream::run_attached;
use stream::{Delivery, start_attached, stream_and_wait};

use crate::config::SandboxConfig;
use crate::docker::{DockerError, LazyDocker, classify};
use container::ContainerGuard;

/// Exit status Docker reports for a process killed by SIGKILL (timeout, OOM killer).
pub(crate) const KILLED: i64 = 137;
/// Longest wait for create + attach + start; a runtime that hangs there must not hang the call.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a serving server looks for containers to reap: a killed server's containers go
/// within their deadline plus this.
pub const REAP_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for a removal before the call answers anyway (the guard's task or the reaper
/// finishes it).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one execution produced.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct ExecutionResult {
    /// Everything the program wrote to stdout (its head and tail when over the cap; see
    /// `truncated`).
    pub stdout: Text,
    /// Everything the program wrote to stderr (likewise).
    pub stderr: Text,
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
    /// Figures and files the program handed back.
    #[serde(skip)]
    #[schemars(skip)]
    pub returned: Returned,
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
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "the server is busy: {waiting} calls are already waiting for one of its {slots} \
         container slots\n\
         hint: try again in a moment, or raise --concurrency (PYEXEC_CONCURRENCY) or \
         --max-queue (PYEXEC_MAX_QUEUE)"
    )]
    Busy { waiting: usize, slots: usize },
    #[error(
        "the server is busy: the calls already waiting hold {} KiB of code and input, and with \
         this call's {} KiB they would pass the {} KiB they may hold\n\
         hint: try again in a moment, send less input per call, or raise --max-queue-bytes \
         (PYEXEC_MAX_QUEUE_BYTES)",
        held.div_ceil(1024),
        size.div_ceil(1024),
        max / 1024
    )]
    BusyBytes {
        held: usize,
        size: usize,
        max: usize,
    },
    #[error("the call was cancelled; its container was removed")]
    Cancelled,
    #[error(
        "sessions are turned off on this server (--max-sessions 0 / PYEXEC_MAX_SESSIONS=0)\n\
         hint: call execute_python without session_id; each call then starts from nothing"
    )]
    SessionsOff,
    #[error(
        "{max} sessions are open, the most this server allows\n\
         hint: close one you no longer need with close_session, or call execute_python \
         without session_id; the limit is --max-sessions (PYEXEC_MAX_SESSIONS)"
    )]
    SessionLimit { max: usize },
    #[error(
        "your token has {max} sessions open, the most one token may have\n\
         hint: close one you no longer need with close_session, or call execute_python \
         without session_id; the limit is --max-sessions-per-token \
         (PYEXEC_MAX_SESSIONS_PER_TOKEN)"
    )]
    SessionLimitPerToken { max: usize },
    #[error(
        "unknown session `{id}`: it was closed, ended, expired (sessions close after {} s \
         without a call and {} s after creation) or never existed; its state is gone\n\
         hint: call create_session for a new one and run what it needs again",
        idle.as_secs(),
        max_age.as_secs()
    )]
    UnknownSession {
        id: String,
        idle: Duration,
        max_age: Duration,
    },
    #[error(
        "the session is still running another call after {} s\n\
         hint: a session runs one call at a time; wait for that call's answer, then call \
         again",
        waited.as_secs()
    )]
    SessionBusy { waited: Duration },
    #[error("the server is shutting down; the call was stopped")]
    ShuttingDown,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How one attached container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Exit status; 137 when killed.
    pub exit_code: i64,
    /// True when the server killed it at the timeout.
    pub timed_out: bool,
    /// True when the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Time from start to the end of its output.
    pub duration_ms: u64,
    /// The files the runner handed back after its trailer.
    pub bundle: Bundle,
}

/// Runs code in fresh containers, one per call, at most `concurrency` at once.
pub struct Sandbox {
    /// The daemon connection, made on first use.
    docker: LazyDocker,
    /// Network, runtime and limits for every container; `config.image` is the base image.
    config: SandboxConfig,
    /// The image executions start from: the base, or the current package environment.
    image: RwLock<Arc<str>>,
    /// This server's identity, the value of every container's owner label.
    instance: String,
    /// Slots for execution containers; a slot frees only after its container is removed.
    permits: Arc<Semaphore>,
    /// Background removals, so shutdown can wait for them.
    cleanup: TaskTracker,
    /// Cancelled when the server shuts down: every running call stops.
    stopping: CancellationToken,
    /// Counter that makes container names unique within this instance.
    next_id: AtomicU64,
    /// Calls waiting for their turn (at most `--max-queue`, holding at most
    /// `--max-queue-bytes`).
    queue: queue::Queue,
    /// Started containers waiting for a call (filled only after `start_pool`).
    pool: pool::Pool,
    /// What an operator watches (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Open sessions (`create_session`).
    sessions: session::Sessions,
    /// Where servers' liveness locks live: the reaper asks there whether a frozen session's
    /// server is gone.
    instances: std::sync::OnceLock<std::path::PathBuf>,
    /// While serving: this server's own liveness lock.
    alive: Mutex<Option<liveness::Alive>>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let config_pool = config.pool;
        let config_sessions = config.sessions;
        let queue = queue::Queue::new(config.max_queue, config.max_queue_bytes);
        Self {
            docker: LazyDocker::default(),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            image: RwLock::new(Arc::from(config.image.as_str())),
            config,
            instance,
            cleanup: TaskTracker::new(),
            stopping: CancellationToken::new(),
            next_id: AtomicU64::new(0),
            queue,
            pool: pool::Pool::new(config_pool),
            metrics: Arc::default(),
            sessions: session::Sessions::new(config_sessions),
            instances: std::sync::OnceLock::new(),
            alive: Mutex::new(None),
        }
    }

    /// Lets the reaper ask the liveness locks under `state_dir` whether a frozen session's
    /// server is gone (a one-shot `exec` does, without holding a lock of its own).
    pub fn see_liveness(&self, state_dir: &std::path::Path) {
        let _ = self.instances.set(liveness::instances_dir(state_dir));
    }

    /// Holds this server's liveness lock under `state_dir` while it serves, so that another
    /// server's reaper can tell its frozen sessions from a dead server's (`liveness`).
    pub fn claim_liveness(&self, state_dir: &std::path::Path) {
        self.see_liveness(state_dir);
        let dir = liveness::instances_dir(state_dir);
        match liveness::claim(&dir, &self.instance) {
            Ok(alive) => *self.alive.lock().unwrap_or_else(|e| e.into_inner()) = Some(alive),
            Err(error) => tracing::warn!(
                %error,
                dir = %dir.display(),
                "cannot hold this server's liveness lock: another server will reap its frozen \
                 sessions only at their deadline should it die"
            ),
        }
    }

    /// Where servers' liveness locks are, once known.
    fn instances_dir(&self) -> Option<std::path::PathBuf> {
        self.instances.get().cloned()
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The gauges behind `/metrics`, read now.
    pub fn gauges(&self) -> crate::metrics::Gauges {
        crate::metrics::Gauges {
            queue_depth: self.queue.calls(),
            queue_bytes: self.queue.bytes(),
            busy_slots: self
                .config
                .concurrency
                .saturating_sub(self.permits.available_permits()),
            warm_containers: self.pool.ready(),
            sessions_open: self.sessions.count(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// This server instance's id, as found on its containers' owner label.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The warm pool, for its refill task.
    pub(in crate::sandbox) fn pool(&self) -> &pool::Pool {
        &self.pool
    }

    /// Cancelled when the sandbox shuts down: background tasks stop on it.
    pub(in crate::sandbox) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// The image new executions start from.
    pub fn current_image(&self) -> Arc<str> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Points later executions at `image`; calls already running keep theirs, and warm
    /// containers of the old image are replaced.
    pub fn set_current_image(&self, image: &str) {
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(image);
        self.pool.wake();
    }

    /// Starts keeping `--pool-size` warm containers (a no-op when it is 0). For the server;
    /// one-shot commands run cold.
    pub fn start_pool(self: &Arc<Self>) {
        if self.config.pool.size > 0 {
            self.cleanup.spawn(pool::keep_full(self.clone()));
        }
    }

    /// Keeps reaping while the server runs: every [`REAP_EVERY`], labelled containers past
    /// their deadline (a server killed earlier, even one that died after this one started)
    /// and warm containers whose server is gone are removed; every second, idle and old
    /// sessions are closed. Stops at shutdown.
    pub fn start_reaper(self: &Arc<Self>) {
        self.start_session_expiry();
        let sandbox = self.clone();
        self.cleanup.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REAP_EVERY) => {}
                    _ = sandbox.stopping.cancelled() => return,
                }
                let Ok(docker) = sandbox.docker.get().await else {
                    continue;
                };
                let instances = sandbox.instances_dir();
                match reap_expired(docker, SystemTime::now(), instances.as_deref()).await {
                    Ok(reaped) => sandbox.metrics.reaped(reaped),
                    Err(error) => tracing::debug!(%error, "could not list containers to reap"),
                }
            }
        });
    }

    /// Warm containers ready right now.
    pub fn pool_ready(&self) -> usize {
        self.pool.ready()
    }

    /// The connected Docker client (connecting on first use).
    pub async fn docker(&self) -> Result<&Docker, SandboxError> {
        Ok(self.docker.get().await?)
    }

    /// The engine behind the connection: Docker or Podman, rootless or not.
    pub async fn engine(&self) -> Result<&crate::docker::Engine, SandboxError> {
        Ok(self.docker.engine().await?)
    }

    /// Connects to Docker, reaps expired containers and checks that the image exists, so
    /// problems show at start-up in the log instead of at the first call.
    pub async fn prepare(&self) -> Result<(), SandboxError> {
        let docker = self.docker.get().await?;
        let instances = self.instances_dir();
        match reap_expired(docker, SystemTime::now(), instances.as_deref()).await {
            Ok(reaped) => self.metrics.reaped(reaped),
            Err(error) => tracing::warn!(%error, "could not list containers to reap"),
        }
        if let Ok(info) = docker.info().await {
            let options = info.security_options.unwrap_or_default();
            if !options.iter().any(|o| o.contains("seccomp")) {
                tracing::warn!(
                    "the Docker daemon reports no seccomp: every system call is open to the \
                     code; see `mcp-python-executor doctor`"
                );
            }
        }
        docker
            .inspect_image(&self.config.image)
            .await
            .map_err(|e| classify(e, "inspect the image", &self.config.image))?;
        Ok(())
    }

    /// Runs one request in a fresh container: a warm one if the pool has one ready, else its
    /// own. The container is removed right after the answer, on every path.
    ///
    /// A warm container that died while idle (Docker restarted, removed by hand) is never
    /// taken (`Pool::take` checks its stream), so a warm call is not retried cold: once the
    /// payload is written the program may have run, and running it twice would be a surprise.
    pub async fn execute(
        &self,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
    ) -> Result<ExecutionResult, SandboxError> {
        self.execute_live(request, cancel, &|_, _| {}).await
    }

    /// [`Sandbox::execute`], with each chunk of output also given to `live` as it arrives
    /// (it must not wait).
    pub async fn execute_live(
        &self,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<ExecutionResult, SandboxError> {
        // Refused before it waits; framed only once it has a slot, so a waiting call holds no
        // copy of its code.
        request.check_size(self.config.limits.max_input_bytes)?;
        let permit = self.acquire(cancel, request.size()).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let files_budget = self.config.outputs.max_files_bytes;
        let payload = request.encode(self.config.limits.max_input_bytes, &token, files_budget)?;
        let image = self.current_image();
        // Whichever path the call takes, the pool refills after it, never during it.
        let _refill = RefillAfter(&self.pool);
        let warm = self.pool.take(&image);
        self.metrics.pool(warm.is_some());
        let (guard, streams) = match warm {
            Some(pool::Warm {
                mut guard, streams, ..
            }) => {
                guard.hold(permit);
                (guard, streams)
            }
            None => {
                // Started under the call's cancel and shutdown like the rest of the call; the
                // guard (holding the slot) exists before the create, so a cut-short start is
                // still removed before the slot frees.
                let starting = self.start_execution(&image, Duration::ZERO, Some(permit));
                tokio::select! {
                    started = starting => started?,
                    _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
                    _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
                }
            }
        };
        let limits = &self.config.limits;
        self.in_container(guard, Removal::Background, cancel, async |docker, guard| {
            let name = guard.name();
            let mut output = Output::new(limits.max_output_bytes);
            let delivery = Delivery {
                payload: &payload,
                timeout: limits.timeout,
                token: Some(&token),
                max_bundle: files_budget + files::MANIFEST_MAX,
            };
            let outcome = stream_and_wait(docker, name, &image, streams, delivery, &mut |s, b| {
                output.push(s, b);
                live(s, b);
            })
            .await?;
            Ok(output.finish(outcome, files_budget))
        })
        .await
    }

    /// Creates, attaches and starts one execution container of `image` (hardened by
    /// `container_spec`, with a uid of its own) that may wait `idle` for its payload: the one
    /// way both a cold call and the pool's refill start a container.
    async fn start_execution(
        &self,
        image: &str,
        idle: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(ContainerGuard, AttachContainerResults), SandboxError> {
        let docker = self.docker.get().await?;
        let guard = self.guard(docker, permit);
        let spec = container_spec(
            &self.config,
            image,
            &self.instance,
            SystemTime::now(),
            idle,
            container::call_uid(),
        );
        let streams = start_attached(docker, &guard, spec).await?;
        Ok((guard, streams))
    }

    /// Takes a concurrency slot for a call holding `size` bytes, waiting for one only while
    /// the queue has room for it (else the server is busy, said at once); gives up on cancel or
    /// shutdown.
    async fn acquire(
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
    pub fn wait_place(&self, size: usize) -> Result<queue::Place<'_>, SandboxError> {
        self.queue.enter(size).map_err(|full| match full {
            queue::Full::Calls { max } => SandboxError::Busy {
                waiting: max,
                slots: self.config.concurrency,
            },
            queue::Full::Bytes { held, max } => SandboxError::BusyBytes { held, size, max },
        })
    }

    /// A guard for a new, uniquely named container of this instance.
    fn guard(&self, docker: &Docker, permit: Option<OwnedSemaphorePermit>) -> ContainerGuard {
        let name = format!(
            "mcp-python-executor-{}-{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        ContainerGuard::new(docker.clone(), name, permit, self.cleanup.clone())
    }

    /// Gives `body` a fresh container name owned by a guard, stops it on cancel or shutdown,
    /// and removes the container whatever happened before returning `body`'s result.
    ///
    /// The shutdown drain waits for it (a tracker token is held to the end, removal included),
    /// so SIGTERM during an install still removes its container before the process exits.
    pub async fn in_fresh_container<T>(
        &self,
        permit: Option<OwnedSemaphorePermit>,
        cancel: &CancellationToken,
        body: impl AsyncFnOnce(&Docker, &ContainerGuard) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let _drained = self.cleanup.token();
        if self.stopping.is_cancelled() {
            return Err(SandboxError::ShuttingDown);
        }
        let docker = self.docker.get().await?;
        let guard = self.guard(docker, permit);
        self.in_container(guard, Removal::Awaited, cancel, body)
            .await
    }

    /// Runs `body` on the guard's container, stops it on cancel or shutdown, and removes the
    /// container whatever happened: before returning, or (`Removal::Background`, executions)
    /// on a tracked task, so the answer does not wait for Docker to tear the container down.
    /// Either way the guard keeps the call's concurrency slot until the container is gone.
    async fn in_container<T>(
        &self,
        guard: ContainerGuard,
        removal: Removal,
        cancel: &CancellationToken,
        body: impl AsyncFnOnce(&Docker, &ContainerGuard) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let docker = self.docker.get().await?;
        let outcome = tokio::select! {
            result = body(docker, &guard) => result,
            _ = cancel.cancelled() => Err(SandboxError::Cancelled),
            _ = self.stopping.cancelled() => Err(SandboxError::ShuttingDown),
        };
        if removal == Removal::Background {
            drop(guard);
            return outcome;
        }
        let name = guard.name().to_string();
        match tokio::time::timeout(REMOVE_TIMEOUT, guard.remove()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(container = %name, %error, "could not remove container")
            }
            Err(_) => {
                tracing::warn!(container = %name, "removal is slow; the reaper will finish it")
            }
        }
        outcome
    }

    /// Waits until no call is running and every call's container has been removed (removal
    /// finishes after the answer). For tests and tools that count containers.
    pub async fn settle(&self) {
        let all = self.config.concurrency as u32;
        let _ = self.permits.acquire_many(all).await;
    }

    /// Stops every running call, then waits (up to `grace`) until all containers are removed.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.sessions.end_all();
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

/// When a container is removed relative to the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Before the call returns (installs: the commit must be done with it).
    Awaited,
    /// Right after: the call returns as soon as its result is known (executions).
    Background,
}

/// Wakes the pool's refill task when dropped, whichever way the call ended.
struct RefillAfter<'a>(&'a pool::Pool);

impl Drop for RefillAfter<'_> {
    fn drop(&mut self) {
        self.0.wake();
    }
}

/// One call's two capped output streams, turned into its result at the end.
struct Output {
    stdout: CappedBuffer,
    stderr: CappedBuffer,
}

impl Output {
    fn new(cap: usize) -> Self {
        Self {
            stdout: CappedBuffer::new(cap),
            stderr: CappedBuffer::new(cap),
        }
    }

    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.push(bytes),
            Stream::Stderr => self.stderr.push(bytes),
        }
    }

    fn finish(self, outcome: RunOutcome, files_budget: usize) -> ExecutionResult {
        let truncated = self.stdout.truncated() || self.stderr.truncated();
        ExecutionResult {
            stdout: self.stdout.into_text(),
            stderr: self.stderr.into_text(),
            exit_code: outcome.exit_code,
            timed_out: outcome.timed_out,
            oom_killed: outcome.oom_killed,
            truncated,
            duration_ms: outcome.duration_ms,
            returned: Returned::from_bundle(outcome.bundle, files_budget),
        }
    }
}
