//! The connection to the Docker daemon, and the translation of Docker's failures into errors
//! that say what to do next.
//!
//! The connection is made lazily and retried on the next call when the daemon is down, so a
//! server started before Docker (or outliving a daemon restart) recovers by itself. The API
//! version is negotiated, so Engine 20.10 (API 1.41) and newer daemons both work.

use bollard::Docker;
use bollard::errors::Error as BollardError;
use tokio::sync::OnceCell;

/// A Docker failure, said so that the user knows the next step. A leaf of the crate: it
/// knows nothing of sandboxes or installs, which wrap it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach Docker at {host} — is the daemon running? ({reason})\n\
         hint: start Docker, or set DOCKER_HOST to the daemon you use"
    )]
    Unreachable { host: String, reason: String },
    #[error("image {image} not found\nhint: build it with `make image` (or images/build.sh)")]
    ImageMissing { image: String },
    #[error("Docker could not {action}: {message}")]
    Failed {
        action: &'static str,
        message: String,
    },
}

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
    pub async fn get(&self) -> Result<&Docker, DockerError> {
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

fn unreachable(error: BollardError) -> DockerError {
    DockerError::Unreachable {
        host: docker_host(),
        reason: error.to_string(),
    }
}

/// Maps a failed Docker call to an error that tells the user what happened and what to do.
///
/// `action` completes "Docker could not …" (e.g. "create the container").
pub fn classify(error: BollardError, action: &'static str, image: &str) -> DockerError {
    match error {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } if message.contains("image") => DockerError::ImageMissing {
            image: image.to_string(),
        },
        BollardError::DockerResponseServerError { message, .. } => {
            DockerError::Failed { action, message }
        }
        BollardError::DockerContainerWaitError { error, .. } => DockerError::Failed {
            action,
            message: error,
        },
        other => unreachable(other),
    }
}
