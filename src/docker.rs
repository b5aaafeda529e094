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
    let target = crate::ssh::SshTarget::parse(&host).map_err(|reason| DockerError::SshUrl {
        host: host.clone(),
        reason,
    })?;
    let (docker, log) = crate::ssh::connect(target).map_err(unreachable)?;
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

/// Which engine answers on the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineKind {
    #[default]
    Docker,
    Podman,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        })
    }
}

/// The engine behind the socket, as far as the sandbox cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Engine {
    pub kind: EngineKind,
    pub version: String,
    /// Containers run in a user namespace of an unprivileged user.
    pub rootless: bool,
    /// The host's cgroup version, when reported ("1" or "2").
    pub cgroup: Option<String>,
}

impl Engine {
    /// Asks the engine; what it does not say stays empty.
    pub async fn of(docker: &Docker) -> Self {
        let version = docker.version().await.ok();
        let info = docker.info().await.ok();
        Self::from_reports(version.as_ref(), info.as_ref())
    }

    /// Reads the engine from its version and info reports (either may be missing).
    pub fn from_reports(
        version: Option<&bollard::models::SystemVersion>,
        info: Option<&bollard::models::SystemInfo>,
    ) -> Self {
        let mut engine = Engine::default();
        if let Some(version) = version {
            let components = version.components.as_deref().unwrap_or_default();
            if components.iter().any(|c| c.name.contains("Podman")) {
                engine.kind = EngineKind::Podman;
            }
            engine.version = version.version.clone().unwrap_or_default();
        }
        if let Some(info) = info {
            let options = info.security_options.as_deref().unwrap_or_default();
            engine.rootless = options.iter().any(|o| o.contains("name=rootless"));
            engine.cgroup = info.cgroup_version.map(|v| v.to_string());
        }
        engine
    }

    /// Why this engine cannot hold the sandbox's memory, process and CPU limits, if it cannot:
    /// rootless engines on cgroup v1 drop them (Podman says so only in its own log).
    pub fn cannot_limit(&self) -> Option<String> {
        (self.rootless && self.cgroup.as_deref() == Some("1")).then(|| {
            format!(
                "{} runs rootless on cgroup v1, where it ignores memory, process and CPU \
                 limits: the sandbox refuses to run code without them",
                self.kind
            )
        })
    }

    /// "Podman 4.3.1, rootless, cgroup v1".
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.kind, self.version);
        text.push_str(if self.rootless {
            ", rootless"
        } else {
            ", rootful"
        });
        if let Some(cgroup) = &self.cgroup {
            text.push_str(&format!(", cgroup v{cgroup}"));
        }
        text
    }
}

fn unreachable(error: BollardError) -> DockerError {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rootless_engine_on_cgroup_v1_is_refused() {
        let engine = |rootless, cgroup: &str| Engine {
            kind: EngineKind::Podman,
            version: "4.3.1".to_string(),
            rootless,
            cgroup: Some(cgroup.to_string()),
        };
        let refused = engine(true, "1").cannot_limit().unwrap();
        assert!(
            refused.contains("Podman runs rootless on cgroup v1"),
            "{refused}"
        );
        assert_eq!(engine(true, "2").cannot_limit(), None);
        assert_eq!(engine(false, "1").cannot_limit(), None);
        assert_eq!(
            engine(false, "1").describe(),
            "Podman 4.3.1, rootful, cgroup v1"
        );
        let said = DockerError::CannotLimit { reason: refused }.to_string();
        assert!(said.contains("\nhint: run a rootful engine"), "{said}");
    }
}
