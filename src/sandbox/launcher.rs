//! The launcher: how this server starts and removes containers.
//!
//! [`Launcher`] owns the engine connection (made on first use), the sandbox's settings, this
//! server's instance id (every container's owner label) and the counter that names its
//! containers, the tracker of background removals, and the token cancelled at shutdown. It
//! makes the guard of every container ([`Launcher::guard`]), starts execution and session
//! containers ([`Launcher::start_execution`], [`Launcher::start_session`]), and runs a body
//! on a container with its removal guaranteed ([`Launcher::in_fresh_container`],
//! [`Launcher::in_container`]). It knows nothing of slots, pools or sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::container::AttachContainerResults;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bollard::models::ContainerCreateBody;

use super::egress::{Exits, add_egress};
use super::guard::ContainerGuard;
use super::spec::{call_uid, container_spec, session_spec};
use super::stream::start_attached;
use super::types::SandboxError;
use crate::engine::{Engine, LazyDocker};
use crate::settings::SandboxConfig;

/// Longest wait for a removal before the call answers anyway (the guard's task or the reaper
/// finishes it).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts, names and removes this server's containers.
pub struct Launcher {
    /// The daemon connection, made on first use.
    docker: LazyDocker,
    /// Network, runtime and limits for every container; `config.image` is the base image.
    config: SandboxConfig,
    /// This server's identity, the value of every container's owner label.
    instance: String,
    /// Counter that makes container names unique within this instance.
    next_id: AtomicU64,
    /// Background removals (and the sandbox's background tasks), so shutdown can wait for
    /// them.
    cleanup: TaskTracker,
    /// Cancelled when the server shuts down: every running call stops.
    stopping: CancellationToken,
    /// Each container's way out through the egress proxy, with `--allow-host`.
    exits: Exits,
}

/// When a container is removed relative to the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Before the call returns (installs: the commit must be done with it).
    Awaited,
    /// Right after: the call returns as soon as its result is known (executions).
    Background,
}

impl Launcher {
    pub fn new(config: SandboxConfig) -> Self {
        let exits = Exits::new(config.egress.clone(), config.runtime.clone());
        Self {
            exits,
            docker: LazyDocker::default(),
            config,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            next_id: AtomicU64::new(0),
            cleanup: TaskTracker::new(),
            stopping: CancellationToken::new(),
        }
    }

    /// The connected Docker client (connecting on first use).
    pub async fn docker(&self) -> Result<&Docker, SandboxError> {
        Ok(self.docker.get().await?)
    }

    /// The engine behind the connection: Docker or Podman, rootless or not.
    pub async fn engine(&self) -> Result<&Engine, SandboxError> {
        Ok(self.docker.engine().await?)
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// This server instance's id, as found on its containers' owner label.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Cancelled when the sandbox shuts down: calls and background tasks stop on it.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// The tracker shutdown waits for: removals, and the sandbox's background tasks.
    pub fn cleanup(&self) -> &TaskTracker {
        &self.cleanup
    }

    /// Stops every running call and background task (shutdown's first step).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// Waits until every tracked task (removals included) is over; nothing new is tracked.
    pub async fn drain(&self) {
        self.cleanup.close();
        self.cleanup.wait().await;
    }

    /// A guard for a new, uniquely named container of this instance.
    pub fn guard(&self, docker: &Docker, permit: Option<OwnedSemaphorePermit>) -> ContainerGuard {
        let name = format!(
            "mcp-python-executor-{}-{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        ContainerGuard::new(docker.clone(), name, permit, self.cleanup.clone())
    }

    /// Creates, attaches and starts one execution container of `image` (hardened by
    /// `container_spec`, with a uid of its own) that may wait `idle` for its payload: the one
    /// way both a cold call and the pool's refill start a container.
    pub async fn start_execution(
        &self,
        image: &str,
        idle: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(ContainerGuard, AttachContainerResults), SandboxError> {
        let docker = self.docker.get().await?;
        let mut guard = self.guard(docker, permit);
        let mut spec = container_spec(
            &self.config,
            image,
            &self.instance,
            SystemTime::now(),
            idle,
            call_uid(),
        );
        self.give_egress(docker, &mut guard, &mut spec).await?;
        let streams = start_attached(docker, &guard, spec).await?;
        Ok((guard, streams))
    }

    /// With `--allow-host`: the container's own egress proxy, owned by its guard and mounted
    /// into `spec`. Without: nothing (the container has no network at all).
    async fn give_egress(
        &self,
        docker: &Docker,
        guard: &mut ContainerGuard,
        spec: &mut ContainerCreateBody,
    ) -> Result<(), SandboxError> {
        let name = guard.name();
        let short = name.rsplit_once(&self.instance).map_or(name, |(_, n)| n);
        let folder = format!("{}{short}", self.instance);
        if let Some((endpoint, resolv_conf)) = self.exits.open(docker, &folder).await? {
            add_egress(spec, endpoint.dir(), &resolv_conf, self.exits.secrets());
            guard.attach_egress(endpoint);
        }
        Ok(())
    }

    /// Creates, attaches and starts one session container of `image` (`session_spec`), its
    /// guard told that the container may be paused when it is removed.
    pub async fn start_session(
        &self,
        image: &str,
    ) -> Result<(ContainerGuard, AttachContainerResults), SandboxError> {
        let docker = self.docker.get().await?;
        let mut guard = self.guard(docker, None);
        guard.may_be_paused();
        let mut spec = session_spec(
            &self.config,
            image,
            &self.instance,
            SystemTime::now(),
            call_uid(),
        );
        self.give_egress(docker, &mut guard, &mut spec).await?;
        let streams = start_attached(docker, &guard, spec).await?;
        Ok((guard, streams))
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
    pub async fn in_container<T>(
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
}
