//! The reaper: removes labelled containers whose deadline has passed, at start and every
//! [`REAP_EVERY`] while serving ([`keep_reaping`]).
//!
//! A server killed with SIGKILL cannot clean up; its containers carry a deadline label, and
//! any running server removes those past it -- one started before the crash too, so a client
//! that restarts its server at once does not keep the dead one's containers. Containers still inside their deadline may
//! belong to another live server instance, so they are left alone — with one exception: a
//! warm-pool container (long deadline: it may wait up to the pool's max age) that has exited
//! with the runner's "no payload" status lost its server, because Docker closes a container's
//! stdin when the server's attach connection dies. Those go at once, and so do session
//! containers that exited so (server gone, or idle past `--session-idle`). A session container
//! frozen between calls cannot exit so: it goes once its server is known to be gone
//! (`liveness`: the server's lock on this machine is free). And a container still only
//! "created" long after its creation was never going to start: servers start what they create
//! within a bounded time, so its server died in between. A paused container is unpaused
//! before it is removed (gVisor cannot kill a paused sandbox).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;

use super::guard::{Removing, remove_container};
use super::launcher::Launcher;
use super::liveness::{self, Liveness};
use super::protocol::NO_PAYLOAD;
use super::types::START_TIMEOUT;
use crate::labels::{LABEL_DEADLINE, LABEL_OWNER, LABEL_SESSION, LABEL_WARM};
use crate::metrics::Metrics;

/// How often a serving server looks for containers to reap: a killed server's containers go
/// within their deadline plus this.
pub const REAP_EVERY: Duration = Duration::from_secs(10);

/// A container created longer ago than this and never started has lost its server (which
/// gives up on a start after [`START_TIMEOUT`]).
const NEVER_STARTED: u64 = START_TIMEOUT.as_secs() * 2;

/// Reaps every [`REAP_EVERY`] until shutdown: labelled containers past their deadline (a
/// server killed earlier, even one that died after this one started) and warm and session
/// containers whose server is gone.
pub(super) async fn keep_reaping(launcher: &Launcher, liveness: &Liveness, metrics: &Metrics) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REAP_EVERY) => {}
            _ = launcher.stopping().cancelled() => return,
        }
        let Ok(docker) = launcher.docker().await else {
            continue;
        };
        let instances = liveness.instances_dir();
        match reap_expired(docker, SystemTime::now(), instances.as_deref()).await {
            Ok(reaped) => metrics.reaped(reaped),
            Err(error) => tracing::debug!(%error, "could not list containers to reap"),
        }
    }
}

/// Every container a server of this project made (any state): labelled with a non-empty
/// owner. An empty owner was inherited from an environment image, not set by a server: such
/// a container is someone's own `docker run`, never ours.
pub async fn labelled_containers(
    docker: &Docker,
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_OWNER.to_string()],
        )])),
        ..Default::default()
    };
    let mut listed = crate::engine::list_containers(docker, options).await?;
    listed.retain(|c| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER))
            .is_some_and(|owner| !owner.is_empty())
    });
    Ok(listed)
}

/// The Unix time after which any server may remove the container. A container with no
/// readable deadline was not made by a current server: it counts as expired (0) rather than
/// being kept forever.
pub fn deadline(container: &ContainerSummary) -> u64 {
    container
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_DEADLINE))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Removes every labelled container whose deadline is before `now`, and the warm and session
/// containers whose server is known to be gone (see `orphaned`; `instances` is where serving
/// servers hold their liveness locks); returns how many.
pub async fn reap_expired(
    docker: &Docker,
    now: SystemTime,
    instances: Option<&Path>,
) -> Result<usize, bollard::errors::Error> {
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut reaped = 0;
    for container in labelled_containers(docker).await? {
        let deadline = deadline(&container);
        // Warm and session containers wait for payloads on stdin: one that exited with "no
        // payload" lost its server (or idled out, a session).
        let waits = container
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_WARM) || l.contains_key(LABEL_SESSION));
        let owner_gone = || {
            let owner = container.labels.as_ref().and_then(|l| l.get(LABEL_OWNER));
            instances
                .zip(owner)
                .is_some_and(|(dir, owner)| liveness::is_gone(dir, owner))
        };
        let paused = container.state == Some(bollard::models::ContainerSummaryStateEnum::PAUSED);
        let Some(id) = container.id.clone() else {
            continue;
        };
        if deadline >= now_secs
            && !never_started(container.state.as_ref(), container.created, now_secs)
            && !(waits && orphaned(docker, &id, container.state.as_ref()).await)
            && !(waits && paused && owner_gone())
        {
            continue;
        }
        let removing = Removing {
            maybe_creating: false,
            maybe_paused: paused,
        };
        match remove_container(docker, &id, removing).await {
            Ok(()) => reaped += 1,
            Err(error) => tracing::warn!(container = %id, %error, "reaper could not remove"),
        }
    }
    if reaped > 0 {
        tracing::info!(reaped, "removed containers a dead server left behind");
    }
    Ok(reaped)
}

/// Whether a container is still only created, long after its creation.
fn never_started(
    state: Option<&bollard::models::ContainerSummaryStateEnum>,
    created: Option<i64>,
    now_secs: u64,
) -> bool {
    let created = u64::try_from(created.unwrap_or(0)).unwrap_or(0);
    state == Some(&bollard::models::ContainerSummaryStateEnum::CREATED)
        && created + NEVER_STARTED < now_secs
}

/// Whether a warm container exited without ever getting a payload.
async fn orphaned(
    docker: &Docker,
    id: &str,
    state: Option<&bollard::models::ContainerSummaryStateEnum>,
) -> bool {
    if state != Some(&bollard::models::ContainerSummaryStateEnum::EXITED) {
        return false;
    }
    let inspected = docker.inspect_container(id, None).await;
    let exit_code = inspected
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.exit_code);
    exit_code == Some(NO_PAYLOAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerSummaryStateEnum as State;

    #[test]
    fn only_containers_created_long_ago_and_never_started_count_as_dead() {
        let now = 10_000;
        let old = Some(now as i64 - NEVER_STARTED as i64 - 1);
        let recent = Some(now as i64 - 5);
        assert!(never_started(Some(&State::CREATED), old, now));
        // A server may be between its create and its start right now.
        assert!(!never_started(Some(&State::CREATED), recent, now));
        // Started containers are judged by their deadline, not by age.
        assert!(!never_started(Some(&State::RUNNING), old, now));
        assert!(!never_started(Some(&State::EXITED), old, now));
    }
}
