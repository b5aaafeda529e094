//! Docker's failures as errors that say what to do next: `DockerError`, and `classify`, which
//! maps a failed request to one. A leaf of the crate: it knows nothing of sandboxes or
//! installs, which wrap it.

use bollard::errors::Error as BollardError;

/// A Docker failure, said so that the user knows the next step. A leaf of the crate: it
/// knows nothing of sandboxes or installs, which wrap it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach Docker at {host} — is the daemon running? ({reason})\n\
         hint: start Docker, or set DOCKER_HOST to the engine you use (Podman's sockets: \
         unix:///run/podman/podman.sock rootful, unix://$XDG_RUNTIME_DIR/podman/podman.sock \
         rootless)"
    )]
    Unreachable {
        host: String,
        reason: String,
        #[source]
        source: Option<BollardError>,
    },
    #[error(
        "{reason}\n\
         hint: run a rootful engine, or rootless on cgroup v2 with the memory, pids and cpu \
         controllers delegated to the user (see the README's Podman section)"
    )]
    CannotLimit { reason: String },
    #[error(
        "image {image} not found\nhint: build it with `mcp-python-executor image build` (or `make image`)"
    )]
    ImageMissing { image: String },
    #[error(
        "DOCKER_HOST={host} is not an ssh:// URL this server can use: {reason}\nhint: write it as the Docker CLI does: ssh://[USER@]HOST[:PORT]"
    )]
    SshUrl { host: String, reason: String },
    #[error(
        "cannot reach Docker at {host} over ssh ({reason})\n\
         hint: `ssh [-p PORT] [USER@]HOST docker system dial-stdio` must work without a prompt \
         for the user running the server: its key in ssh-agent or an IdentityFile in \
         ~/.ssh/config, the host's key in ~/.ssh/known_hosts, and the docker CLI on the remote \
         host's PATH"
    )]
    SshUnreachable { host: String, reason: String },
    #[error("Docker could not {action}: {message}")]
    Failed {
        action: &'static str,
        message: String,
        /// Docker's own error, when there was one (its text is in `message`).
        #[source]
        source: Option<BollardError>,
    },
}

/// Where `DOCKER_HOST` (or the default socket) points, for messages.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

pub(super) fn unreachable(error: BollardError) -> DockerError {
    DockerError::Unreachable {
        host: docker_host(),
        reason: error.to_string(),
        source: Some(error),
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
        BollardError::DockerResponseServerError { ref message, .. } => DockerError::Failed {
            action,
            message: message.clone(),
            source: Some(error),
        },
        BollardError::DockerContainerWaitError {
            error: ref message, ..
        } => DockerError::Failed {
            action,
            message: message.clone(),
            source: Some(error),
        },
        other => unreachable(other),
    }
}
