//! Removing superseded layers: the images of this environment tag that are no longer in the
//! chain below the tag (a later install's parent chain, or nothing after a reset).
//!
//! One round runs right after every install and reset; layers a container still uses (a warm
//! container being replaced, a call or a session still running) are retried in the
//! background for a few minutes or a session's lifetime, whichever is longer. A round is
//! skipped while any server's install holds the lock file, since that install owns the chain.
//! Which layers go is decided by `plan::superseded`. The retries run on the environment's
//! [`Background`], so shutdown ends them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};

use crate::labels::{LABEL_DEPTH, LABEL_ENV, LABEL_PARENT};
use crate::sandbox::Sandbox;
use crate::settings::EnvironmentConfig;
use crate::tasks::Background;

use super::lock;
use super::plan::superseded;

/// How long superseded layers still in use are retried at least (a session may hold one for
/// its whole lifetime: then as long as that), and how often: every 2 s at first, backing off
/// to every 10 s.
const COLLECT_FOR: Duration = Duration::from_secs(180);
const COLLECT_EVERY: Duration = Duration::from_secs(2);
const COLLECT_EVERY_MAX: Duration = Duration::from_secs(10);

/// Removes this tag's layers that are no longer in its chain, now; those a container
/// still uses (a warm container being replaced, a call or a session still running) are
/// retried in the background for a few minutes or a session's lifetime, whichever is
/// longer, and by every later install.
pub async fn collect_superseded(
    sandbox: &Sandbox,
    config: &EnvironmentConfig,
    background: &Background,
) {
    let Ok(docker) = sandbox.docker().await else {
        return;
    };
    if collect(docker, &config.env_tag).await == 0 {
        return;
    }
    let (docker, config) = (docker.clone(), config.clone());
    let sandbox = sandbox.config();
    let longest = COLLECT_FOR.max(sandbox.sessions.max_age + sandbox.limits.timeout * 2);
    background.spawn(async move {
        let deadline = Instant::now() + longest;
        let mut every = COLLECT_EVERY;
        while Instant::now() < deadline {
            tokio::time::sleep(every).await;
            every = (every * 2).min(COLLECT_EVERY_MAX);
            // A running install of any server owns the chain: skip its round.
            let Some(_lock) = lock::EnvLock::try_acquire(&config.state_dir, &config.env_tag) else {
                continue;
            };
            if collect(&docker, &config.env_tag).await == 0 {
                return;
            }
        }
    });
}

/// One round of removing `env_tag`'s superseded layers; returns how many are still in use.
async fn collect(docker: &bollard::Docker, env_tag: &str) -> usize {
    let options = ListImagesOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_ENV}={env_tag}")],
        )])),
        ..Default::default()
    };
    let Ok(listed) = docker.list_images(Some(options)).await else {
        return 0;
    };
    // The tag is read after the listing: a layer committed in between is not listed, and
    // its parent is in the chain read here.
    let head = docker
        .inspect_image(env_tag)
        .await
        .ok()
        .and_then(|image| image.id);
    let layers: Vec<(String, Option<String>, u32)> = listed
        .into_iter()
        .map(|image| {
            let depth = image
                .labels
                .get(LABEL_DEPTH)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let parent = image.labels.get(LABEL_PARENT).cloned();
            (image.id, parent, depth)
        })
        .collect();
    let mut in_use = 0;
    for id in superseded(&layers, head.as_deref()) {
        match docker
            .remove_image(&id, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_) => tracing::debug!(image = %id, "superseded layer removed"),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => {
                tracing::debug!(image = %id, %error, "superseded layer still in use; retrying later");
                in_use += 1;
            }
        }
    }
    in_use
}
