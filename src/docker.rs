//! The connection to the Docker daemon, and the translation of Docker's failures into errors
//! that say what to do next.
//!
//! The connection is made lazily and retried on the next call when the daemon is down, so a
//! server started before Docker (or outliving a daemon restart) recovers by itself. The API
//! version is negotiated, so Engine 20.10 (API 1.41) and newer daemons both work.

use bollard::Docker;
use bollard::errors::Error as BollardError;
use tokio::sync::OnceCell;

use crate::sandbox::SandboxError;

/// Where `DOCKER_HOST` (or the default socket) points, for messages.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// A Docker client that connects on first use and retries until the daemon answers.
#[derive(Default)]
pub struct LazyDocker {
    /// The negotiated client, once the daemon has answered.
    client: OnceCell<Docker>,
}

impl LazyDocker {
    /// The connected client, connecting (and negotiating the API version) if needed.
    pub async fn get(&self) -> Result<&Docker, SandboxError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                let docker = docker.negotiate_version().await.map_err(unreachable)?;
                tracing::debug!(version = %docker.client_version(), "connected to Docker");
                Ok(docker)
            })
            .await
    }
}

fn unreachable(error: BollardError) -> SandboxError {
    SandboxError::DockerUnreachable {
        host: docker_host(),
        reason: error.to_string(),
    }
}

/// Maps a failed Docker call to an error that tells the user what happened and what to do.
///
/// `action` completes "Docker could not …" (e.g. "create the container").
pub fn classify(error: BollardError, action: &'static str, image: &str) -> SandboxError {
    match error {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } if message.contains("image") => SandboxError::ImageMissing {
            image: image.to_string(),
        },
        BollardError::DockerResponseServerError { message, .. } => {
            SandboxError::Docker { action, message }
        }
        BollardError::DockerContainerWaitError { error, .. } => SandboxError::Docker {
            action,
            message: error,
        },
        other => unreachable(other),
    }
}
