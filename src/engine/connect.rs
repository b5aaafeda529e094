//! The connection to the engine, made lazily and retried on the next call when the daemon is
//! down, so a server started before Docker (or outliving a daemon restart) recovers by
//! itself. The API version is negotiated, so Engine 20.10 (API 1.41) and newer daemons both
//! work; `ssh://` hosts go through [`super::ssh`]. Also a container listing that survives
//! Podman's races.

use bollard::Docker;
use bollard::errors::Error as BollardError;
use tokio::sync::OnceCell;

use super::error::{DockerError, docker_host, unreachable};
use super::kind::Engine;

/// A Docker client that connects on first use and retries until the daemon answers.
#[derive(Default)]
pub struct LazyDocker {
    /// The negotiated client and what engine it reaches, once the daemon has answered.
    client: OnceCell<(Docker, Engine)>,
}

impl LazyDocker {
    /// The connected client, connecting (and negotiating the API version) if needed. An
    /// engine that cannot hold the sandbox's limits is refused here, before any container.
    pub async fn get(&self) -> Result<&Docker, DockerError> {
        Ok(&self.connected().await?.0)
    }

    /// The engine the client reaches (connecting if needed).
    pub async fn engine(&self) -> Result<&Engine, DockerError> {
        Ok(&self.connected().await?.1)
    }

    async fn connected(&self) -> Result<&(Docker, Engine), DockerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = connect().await?;
                let engine = Engine::of(&docker).await;
                tracing::debug!(version = %docker.client_version(), ?engine, "connected");
                if let Some(reason) = engine.cannot_limit() {
                    return Err(DockerError::CannotLimit { reason });
                }
                Ok((docker, engine))
            })
            .await
    }
}

/// Connects to `DOCKER_HOST` (or the default socket) and negotiates the API version: Docker's
/// CLI conventions, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for `tcp://` included.
///
/// `ssh://[user@]host[:port]` runs `ssh … docker system dial-stdio` per connection, as the
/// Docker CLI does (`ssh.rs`); what ssh said is the reason when it fails.
pub async fn connect() -> Result<Docker, DockerError> {
    let host = docker_host();
    if host.starts_with("ssh://") {
        return connect_over_ssh(host).await;
    }
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

async fn connect_over_ssh(host: String) -> Result<Docker, DockerError> {
    let target = super::ssh::SshTarget::parse(&host).map_err(|reason| DockerError::SshUrl {
        host: host.clone(),
        reason,
    })?;
    let (docker, log) = super::ssh::connect(target).map_err(unreachable)?;
    match docker.negotiate_version().await {
        Ok(docker) => Ok(docker),
        Err(error) => {
            // ssh's own words arrive as it exits, a moment after the connection closed.
            let mut said = log.take();
            for _ in 0..20 {
                if said.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                said = log.take();
            }
            Err(DockerError::SshUnreachable {
                host,
                reason: said.unwrap_or_else(|| error.to_string()),
            })
        }
    }
}

/// Lists containers, asking again when the engine fails because a container vanished while it
/// listed: Podman answers a list that races a removal with a 500 ("container not known") rather
/// than leaving the container out. Other failures are returned at once.
pub async fn list_containers(
    docker: &Docker,
    options: bollard::query_parameters::ListContainersOptions,
) -> Result<Vec<bollard::models::ContainerSummary>, BollardError> {
    let mut attempts = 0;
    loop {
        match docker.list_containers(Some(options.clone())).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 500,
                message,
            }) if attempts < 5 && vanished(&message) => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempts)).await;
            }
            other => return other,
        }
    }
}

/// Whether an engine's error says a container it was looking at no longer exists.
fn vanished(message: &str) -> bool {
    message.contains("container not known") || message.contains("no such container")
}
