//! Which engine answers (Docker or Podman, its version, rootless or not, the cgroup
//! version), and whether it can enforce the sandbox's limits.

use bollard::Docker;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DockerError;

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
