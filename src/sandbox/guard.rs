//! The guard that owns one container's removal, and the removal itself.
//!
//! [`ContainerGuard`] owns a container from before it is created until it is removed:
//! `remove().await` on the normal path, and on every other path (error, timeout, cancel,
//! panic) its `Drop` removes it in the background. The guard also holds the concurrency
//! permit, so a permit is returned only when its container is gone. [`remove_container`] is
//! the one removal loop every container goes through (the guard's and the reaper's).

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptions;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;

use crate::egress::Endpoint;

/// Owns one container by name, from before its creation until its removal.
///
/// The name is chosen before the create call, so even a create interrupted half-way is
/// removed: removal of a container that was never created is a harmless 404.
pub struct ContainerGuard {
    /// Client used to remove the container.
    docker: Docker,
    /// The container's name; `None` once removal has been handed off.
    name: Option<String>,
    /// The concurrency slot (executions only), released only after the container is gone.
    permit: Option<OwnedSemaphorePermit>,
    /// Background removals started by `Drop`, so shutdown can wait for them.
    cleanup: TaskTracker,
    /// Held by the container's create request while it runs: a removal waits for it, since an
    /// engine asked to remove a container it is still creating may keep a half-made one
    /// (Podman 4.3 then fails every later list).
    creating: Arc<tokio::sync::Mutex<()>>,
    /// The container may be paused (a session's, between calls): it is unpaused before it is
    /// removed, since gVisor cannot kill a paused sandbox (the removal fails after 10 s).
    may_be_paused: bool,
    /// The container's egress proxy (`--allow-host`), stopped once the container is gone.
    egress: Option<Endpoint>,
}

impl ContainerGuard {
    pub fn new(
        docker: Docker,
        name: String,
        permit: Option<OwnedSemaphorePermit>,
        cleanup: TaskTracker,
    ) -> Self {
        Self {
            docker,
            name: Some(name),
            permit,
            cleanup,
            creating: Arc::default(),
            may_be_paused: false,
            egress: None,
        }
    }

    /// Gives the guard the container's egress proxy, to end with the container.
    pub fn attach_egress(&mut self, endpoint: Endpoint) {
        self.egress = Some(endpoint);
    }

    /// The container's egress proxy, when it has one.
    pub fn egress(&self) -> Option<&Endpoint> {
        self.egress.as_ref()
    }

    /// Says the container may be paused when it is removed (see `may_be_paused`).
    pub fn may_be_paused(&mut self) {
        self.may_be_paused = true;
    }

    /// What its removal knows: its create may be in flight, and whether it may be paused.
    fn removing(&self) -> Removing {
        Removing {
            maybe_creating: true,
            maybe_paused: self.may_be_paused,
        }
    }

    /// The gate a create request holds while it runs (see `creating`).
    pub fn create_gate(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.creating.clone()
    }

    /// Hands the guard a concurrency slot (a warm container taken by a call), released only
    /// when the container is gone.
    pub fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
    }

    /// The container's name, usable wherever Docker takes an id.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Kills (if running) and removes the container, then releases the permit. The same
    /// removal as on drop, awaited: a create cut short by a cancel is still caught.
    pub async fn remove(mut self) -> Result<(), bollard::errors::Error> {
        let name = self.name.take().unwrap_or_default();
        let _permit = self.permit.take();
        let _created = self.creating.lock().await;
        let removed = remove_container(&self.docker, &name, self.removing()).await;
        drop(self.egress.take());
        removed
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let permit = self.permit.take();
        let docker = self.docker.clone();
        let creating = self.creating.clone();
        let removing = self.removing();
        let egress = self.egress.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(container = %name, "no runtime to remove the container; the reaper will");
            return;
        };
        self.cleanup.spawn_on(
            async move {
                let _created = creating.lock().await;
                if let Err(error) = remove_container(&docker, &name, removing).await {
                    tracing::warn!(container = %name, %error, "could not remove container; the reaper will once its deadline passes");
                }
                drop(egress);
                drop(permit);
            },
            &runtime,
        );
    }
}

/// What a removal knows of the container it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removing {
    /// Its create request may still be in flight (a guard dropped mid-create: a cancelled
    /// call, a pool refill stopped by shutdown), so "no such container" is not yet proof of
    /// absence. A container the reaper listed exists, and a 404 means it is gone.
    pub maybe_creating: bool,
    /// It may be paused (a session's, between calls): it is unpaused before each attempt,
    /// since gVisor cannot kill a paused sandbox (the removal fails after 10 s), and a pause
    /// still in flight may land after a first unpause. (runc and Podman pay one request.)
    pub maybe_paused: bool,
}

/// Force-removes a container, retrying what is worth retrying: a 404 while its create may
/// still be in flight (asked again twice over the next 2.5 s); an engine that refuses with a
/// server error (Podman, for a container caught between its last process's exit and its
/// "stopped" state, "container state improper", as an unpaused session whose runner exits at
/// once: for about 3 s); and Docker unreachable (a daemon restart, a proxy blip: for about
/// 15 s), before leaving the container to the reaper. A 409 (already being removed) counts
/// as removed.
pub async fn remove_container(
    docker: &Docker,
    name: &str,
    removing: Removing,
) -> Result<(), bollard::errors::Error> {
    let options = || RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut retries = Retries::default();
    loop {
        if removing.maybe_paused {
            match docker.unpause_container(name).await {
                Ok(()) => tracing::debug!(container = %name, "unpaused to be removed"),
                Err(error) => tracing::trace!(container = %name, %error, "not paused"),
            }
        }
        let Err(error) = docker.remove_container(name, Some(options())).await else {
            return Ok(());
        };
        match retries.after(error, removing, name)? {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Ok(()),
        }
    }
}

/// The retries [`remove_container`] has left, by kind of failure.
struct Retries {
    not_found: std::slice::Iter<'static, Duration>,
    unreachable: std::slice::Iter<'static, Duration>,
    refused: std::slice::Iter<'static, Duration>,
}

impl Default for Retries {
    fn default() -> Self {
        const NOT_FOUND_PAUSES: [Duration; 2] =
            [Duration::from_millis(500), Duration::from_secs(2)];
        const UNREACHABLE_PAUSES: [Duration; 4] = [
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4),
            Duration::from_secs(8),
        ];
        const REFUSED_PAUSES: [Duration; 4] = [
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ];
        Self {
            not_found: NOT_FOUND_PAUSES.iter(),
            unreachable: UNREACHABLE_PAUSES.iter(),
            refused: REFUSED_PAUSES.iter(),
        }
    }
}

impl Retries {
    /// What a failed removal of `name` calls for: the pause before the next attempt, `None`
    /// when the failure means the container is gone (or going), or the error to give up with.
    fn after(
        &mut self,
        error: bollard::errors::Error,
        removing: Removing,
        name: &str,
    ) -> Result<Option<Duration>, bollard::errors::Error> {
        use bollard::errors::Error::DockerResponseServerError as Server;
        let pause = match error {
            Server {
                status_code: 404, ..
            } => {
                return Ok(self
                    .not_found
                    .next()
                    .filter(|_| removing.maybe_creating)
                    .copied());
            }
            Server {
                status_code: 409, ..
            } => return Ok(None),
            Server {
                status_code: 500.., ..
            } => match self.refused.next() {
                Some(pause) => {
                    tracing::debug!(container = %name, %error, retry_in = ?pause, "removal refused");
                    pause
                }
                None => return Err(error),
            },
            Server { .. } => return Err(error),
            _ => match self.unreachable.next() {
                Some(pause) => {
                    tracing::debug!(container = %name, %error, retry_in = ?pause, "removal failed");
                    pause
                }
                None => return Err(error),
            },
        };
        Ok(Some(*pause))
    }
}
