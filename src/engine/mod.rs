//! The engine: the connection to the Docker API (Docker or Podman, local, over TLS or over
//! `ssh://`), what engine answers, and Docker's failures said with a next step. Below the
//! sandbox, the installs and `doctor`; above nothing of ours but the leaves.

mod connect;
mod error;
mod kind;
pub mod ssh;

pub use connect::{LazyDocker, connect, list_containers};
pub use error::{DockerError, classify, docker_host};
pub use kind::{Engine, EngineKind};
