//! The sandbox: runs Python in short-lived hardened containers. Nothing here knows about MCP.
//!
//! [`Sandbox`] is the façade the rest of the crate uses; it holds the parts and delegates.
//! [`Sandbox::execute`] is the whole path of an `execute_python` call below the protocol: it
//! checks the request, waits for a concurrency slot, runs the code in a fresh container under
//! the limits, and removes the container before answering, whatever happened (`plain.rs`).
//! Sessions (`sessions.rs`, `session_call.rs`) are the one exception to "a container per
//! call": one container runs the calls of one session.
//!
//! The parts, each importing only those below it:
//! - `plain`, `sessions` (+ `session_call`, `session`), `pool`, `reaper`: what runs calls
//!   and what runs in the background;
//! - `launcher` (engine connection, instance, names, removals, shutdown token) and `slots`
//!   (permits and the bounded `queue`);
//! - `stream` (create, attach, start; payload in, output out), over `guard` (a container's
//!   removal), over `spec` (the hardened create bodies);
//! - the leaves: `protocol` (what `runner.py` agrees with), `payload` (the request), `output`,
//!   `files`, `liveness`, and `types` (the errors, results and values every part shares).

mod egress;
mod files;
mod guard;
mod launcher;
mod liveness;
mod output;
mod payload;
mod plain;
mod pool;
mod protocol;
mod queue;
mod reaper;
mod session;
mod session_call;
mod sessions;
mod slots;
mod spec;
mod stream;
mod types;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

pub use crate::labels::{LABEL_DEADLINE, LABEL_INSTALL, LABEL_OWNER, LABEL_SESSION};
pub use files::{FileKind, LeftOut, Returned, ReturnedFile};
pub use output::{CappedBuffer, Omitted, Text, complete_prefix_len, fit_both};
pub use payload::{ExecutionRequest, MAX_INPUT_LINES, StdinLines};
pub use protocol::{Bundle, INTERRUPT_GRACE};
pub use queue::Place as WaitPlace;
pub use reaper::{REAP_EVERY, deadline, labelled_containers, reap_expired};
pub use session::{SessionEnd, SessionInfo, SessionOutcome};
pub use spec::{CALL_UIDS, InstallTarget, container_spec, install_spec, session_spec};
pub use stream::run_attached;
pub use types::{ExecutionResult, RunOutcome, SandboxError, Stream};

use crate::engine::classify;
use crate::metrics::{Gauges, Metrics};
use crate::settings::SandboxConfig;
use guard::ContainerGuard;
use launcher::Launcher;
use liveness::Liveness;
use plain::PlainCall;
use pool::Pool;
use session_call::SessionCall;
use sessions::Sessions;
use slots::Slots;

/// Runs code in fresh containers, one per call, at most `concurrency` at once.
pub struct Sandbox {
    /// The engine connection, settings, instance id, removals and shutdown token.
    launcher: Launcher,
    /// Slots for execution containers, and the calls waiting for one.
    slots: Slots,
    /// The image executions start from: the base, or the current package environment.
    image: RwLock<Arc<str>>,
    /// Started containers waiting for a call (filled only after `start_pool`).
    pool: Pool,
    /// Open sessions (`create_session`).
    sessions: Sessions,
    /// What an operator watches (`/metrics`).
    metrics: Arc<Metrics>,
    /// Where servers' liveness locks are, and this server's own while it serves.
    liveness: Liveness,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let launcher = Launcher::new(config);
        let config = launcher.config();
        let slots = Slots::new(
            config.concurrency,
            config.max_queue,
            config.max_queue_bytes,
            launcher.stopping().clone(),
        );
        Self {
            slots,
            image: RwLock::new(Arc::from(config.image.as_str())),
            pool: Pool::new(config.pool),
            sessions: Sessions::new(config.sessions),
            metrics: Arc::default(),
            liveness: Liveness::default(),
            launcher,
        }
    }

    /// Lets the reaper ask the liveness locks under `state_dir` whether a frozen session's
    /// server is gone (a one-shot `exec` does, without holding a lock of its own).
    pub fn see_liveness(&self, state_dir: &std::path::Path) {
        self.liveness.see(state_dir);
    }

    /// Holds this server's liveness lock under `state_dir` while it serves, so that another
    /// server's reaper can tell its frozen sessions from a dead server's (`liveness`).
    pub fn claim_liveness(&self, state_dir: &std::path::Path) {
        self.liveness.claim(state_dir, self.launcher.instance());
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The gauges behind `/metrics`, read now.
    pub fn gauges(&self) -> Gauges {
        let (queue_depth, queue_bytes) = self.slots.waiting();
        Gauges {
            queue_depth,
            queue_bytes,
            busy_slots: self.slots.busy(),
            warm_containers: self.pool.ready(),
            sessions_open: self.sessions.count(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        self.launcher.config()
    }

    /// This server instance's id, as found on its containers' owner label.
    pub fn instance(&self) -> &str {
        self.launcher.instance()
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
        if self.config().pool.size > 0 {
            let sandbox = self.clone();
            self.launcher.cleanup().spawn(async move {
                let current_image = || sandbox.current_image();
                pool::keep_full(&sandbox.launcher, &sandbox.pool, &current_image).await;
            });
        }
    }

    /// Keeps reaping while the server runs: every [`REAP_EVERY`], labelled containers past
    /// their deadline (a server killed earlier, even one that died after this one started)
    /// and warm containers whose server is gone are removed; every second, idle and old
    /// sessions are closed. Stops at shutdown.
    pub fn start_reaper(self: &Arc<Self>) {
        let sandbox = self.clone();
        self.launcher.cleanup().spawn(async move {
            let stopping = sandbox.launcher.stopping();
            sandbox.sessions.keep_expiring(stopping).await;
        });
        let sandbox = self.clone();
        self.launcher.cleanup().spawn(async move {
            let (launcher, liveness) = (&sandbox.launcher, &sandbox.liveness);
            reaper::keep_reaping(launcher, liveness, &sandbox.metrics).await;
        });
    }

    /// Warm containers ready right now.
    pub fn pool_ready(&self) -> usize {
        self.pool.ready()
    }

    /// The connected Docker client (connecting on first use).
    pub async fn docker(&self) -> Result<&Docker, SandboxError> {
        self.launcher.docker().await
    }

    /// The engine behind the connection: Docker or Podman, rootless or not.
    pub async fn engine(&self) -> Result<&crate::engine::Engine, SandboxError> {
        self.launcher.engine().await
    }

    /// Connects to Docker, reaps expired containers and checks that the image exists, so
    /// problems show at start-up in the log instead of at the first call.
    pub async fn prepare(&self) -> Result<(), SandboxError> {
        let docker = self.launcher.docker().await?;
        let instances = self.liveness.instances_dir();
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
        let image = &self.config().image;
        docker
            .inspect_image(image)
            .await
            .map_err(|e| classify(e, "inspect the image", image))?;
        Ok(())
    }

    /// Runs one request in a fresh container: a warm one if the pool has one ready, else its
    /// own. The container is removed right after the answer, on every path (`plain.rs`).
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
        let current_image = || self.current_image();
        let call = PlainCall {
            launcher: &self.launcher,
            slots: &self.slots,
            pool: &self.pool,
            metrics: &self.metrics,
            current_image: &current_image,
        };
        call.run(request, cancel, live).await
    }

    /// Opens a session: one container, started now, whose interpreter keeps its state between
    /// calls. It counts against the concurrency limit only while it starts (and later while a
    /// call runs); against `--max-sessions` until it ends.
    pub async fn create_session(
        &self,
        owner: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<SessionInfo, SandboxError> {
        let current_image = || self.current_image();
        let (launcher, slots) = (&self.launcher, &self.slots);
        self.sessions
            .create(launcher, slots, &current_image, owner, cancel)
            .await
    }

    /// Ends the session `id` of `owner` at once, removing its container (a call running in it
    /// is stopped).
    pub fn close_session(&self, id: &str, owner: Option<&str>) -> Result<(), SandboxError> {
        self.sessions.close_owned(id, owner)
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.count()
    }

    /// Runs one request in the session `id`: in its interpreter, after the calls before it.
    /// A second call waits while one runs (up to the call timeout and a margin), then is
    /// answered busy. The call holds a concurrency slot while it runs (`session_call.rs`).
    pub async fn execute_in_session(
        &self,
        id: &str,
        owner: Option<&str>,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<SessionOutcome, SandboxError> {
        let call = SessionCall {
            sessions: &self.sessions,
            launcher: &self.launcher,
            slots: &self.slots,
            id,
            owner,
            cancel,
        };
        call.run(request, live).await
    }

    /// A place among the waiting calls for one holding `size` bytes of code and input, held
    /// while it waits for anything (a slot, a session's turn, the preinstall); busy when the
    /// queue is full in calls or in bytes.
    pub fn wait_place(&self, size: usize) -> Result<WaitPlace<'_>, SandboxError> {
        self.slots.wait_place(size)
    }

    /// Runs `body` with a fresh container name owned by a guard, removed whatever happens
    /// (see [`Launcher::in_fresh_container`]).
    pub async fn in_fresh_container<T>(
        &self,
        permit: Option<OwnedSemaphorePermit>,
        cancel: &CancellationToken,
        body: impl AsyncFnOnce(&Docker, &ContainerGuard) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        self.launcher.in_fresh_container(permit, cancel, body).await
    }

    /// Waits until no call is running and every call's container has been removed (removal
    /// finishes after the answer). For tests and tools that count containers.
    pub async fn settle(&self) {
        self.slots.settle().await;
    }

    /// Stops every running call, then waits (up to `grace`) until all containers are removed.
    pub async fn shutdown(&self, grace: Duration) {
        self.launcher.stop();
        self.sessions.end_all();
        let drained = async {
            self.slots.settle().await;
            self.launcher.drain().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace passed with containers still being removed");
        }
    }
}
