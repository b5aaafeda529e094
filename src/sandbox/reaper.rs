//! The startup reaper: removes labelled containers whose deadline has passed.
//!
//! A server killed with SIGKILL cannot clean up; its containers carry a deadline label, and the
//! next server to start removes those past it. Containers still inside their deadline may
//! belong to another live server instance, so they are left alone.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;

use super::container::{LABEL_DEADLINE, LABEL_OWNER, remove_container};

/// Removes every labelled container whose deadline is before `now`; returns how many.
pub async fn reap_expired(
    docker: &Docker,
    now: SystemTime,
) -> Result<usize, bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_OWNER.to_string()],
        )])),
        ..Default::default()
    };
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut reaped = 0;
    for container in docker.list_containers(Some(options)).await? {
        let labels = container.labels.unwrap_or_default();
        // An empty owner was inherited from an environment image, not set by a server: such a
        // container is someone's own `docker run`, never ours to remove.
        if labels.get(LABEL_OWNER).is_none_or(|owner| owner.is_empty()) {
            continue;
        }
        // A container with no readable deadline was not made by a current server: treat it as
        // expired rather than keep it forever.
        let deadline = labels
            .get(LABEL_DEADLINE)
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0);
        if deadline >= now_secs {
            continue;
        }
        let Some(id) = container.id else { continue };
        match remove_container(docker, &id).await {
            Ok(()) => reaped += 1,
            Err(error) => tracing::warn!(container = %id, %error, "reaper could not remove"),
        }
    }
    if reaped > 0 {
        tracing::info!(
            reaped,
            "removed containers left behind by an earlier server"
        );
    }
    Ok(reaped)
}
