//! The sandbox's side of egress (`--allow-host`): where each container's proxy socket lives on
//! this machine, the `resolv.conf` with no nameserver every such container gets (names are
//! the proxy's to resolve), and the one check an engine needs before it can pass a host
//! socket into a container (gVisor's `--host-uds`). [`Exits::open`] makes a container's
//! [`Endpoint`]; the launcher mounts it ([`add_egress`]) and the guard owns it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use tokio::sync::OnceCell;

use super::protocol::{EGRESS_DIR, EGRESS_PORT};
use super::spec::read_only_bind;
use super::types::SandboxError;
use crate::egress::{CA_BUNDLE, Endpoint, Policy, Secrets};

/// A socket folder with no socket this old was left by a server killed while making it.
const STALE: Duration = Duration::from_secs(60);
/// What a container with an allowlist finds in /etc/resolv.conf.
const RESOLV_CONF: &str = "# No nameserver: this sandbox has no network. Names are resolved by \
the server's egress proxy (HTTP_PROXY), which decides which hosts may be reached.\n";

/// The socket folders of this server's containers, and whether the engine can pass them in.
pub struct Exits {
    policy: Option<Arc<Policy>>,
    /// `<temp>/mcp-python-executor-<uid>/egress`, this user's own (`private_dir`).
    base: PathBuf,
    /// The engine's runtime, checked once, on the first container with an allowlist.
    runtime_checked: OnceCell<()>,
    runtime: Option<String>,
    /// Set once the base folder is checked and its `resolv.conf` written (by this process:
    /// the first use also removes stale folders).
    prepared: std::sync::OnceLock<()>,
}

impl Exits {
    pub fn new(policy: Option<Arc<Policy>>, runtime: Option<String>) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Self {
            policy,
            base: std::env::temp_dir()
                .join(format!("mcp-python-executor-{uid}"))
                .join("egress"),
            runtime_checked: OnceCell::new(),
            runtime,
            prepared: std::sync::OnceLock::new(),
        }
    }

    /// The endpoint of the container `name`, or `None` without an allowlist.
    pub async fn open(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Option<(Endpoint, PathBuf)>, SandboxError> {
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        self.runtime_checked
            .get_or_try_init(|| async { self.check_runtime(docker).await.map(|_| ()) })
            .await?;
        let failed = |error: std::io::Error| SandboxError::Egress {
            reason: format!(
                "its socket under {} could not be made: {error}",
                self.base.display()
            ),
        };
        let resolv_conf = self.prepare().map_err(failed)?;
        let endpoint = Endpoint::open(&self.base, name, policy.clone()).map_err(failed)?;
        Ok(Some((endpoint, resolv_conf)))
    }

    /// The secrets the proxy injects, whose placeholders every container gets.
    pub fn secrets(&self) -> Option<&crate::egress::Secrets> {
        self.policy.as_ref()?.secrets.as_deref()
    }

    /// The base folder (private, made on first use, with stale folders of crashed servers
    /// removed) and the path of its `resolv.conf`.
    fn prepare(&self) -> std::io::Result<PathBuf> {
        let resolv_conf = self.base.join("resolv.conf");
        if self.prepared.get().is_some() {
            return Ok(resolv_conf);
        }
        if let Some(parent) = self.base.parent() {
            crate::private_dir::ensure(parent)?;
        }
        crate::private_dir::ensure(&self.base)?;
        remove_stale(&self.base);
        let staged = self
            .base
            .join(format!("resolv.conf.{}", std::process::id()));
        std::fs::write(&staged, RESOLV_CONF)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&staged, &resolv_conf)?;
        let _ = self.prepared.set(());
        Ok(resolv_conf)
    }

    /// gVisor passes a host socket into its sandbox only when told to (`--host-uds=open`);
    /// without it every connection of the program would fail. Refused with the fix instead,
    /// whether gVisor is asked for (`--runtime`) or the daemon's default.
    async fn check_runtime(&self, docker: &Docker) -> Result<(), SandboxError> {
        let Ok(info) = docker.info().await else {
            return Ok(());
        };
        // The runtime asked for, else the daemon's default (which may be gVisor too).
        let Some(name) = self.runtime.clone().or(info.default_runtime) else {
            return Ok(());
        };
        let Some(runtime) = info.runtimes.and_then(|r| r.get(&name).cloned()) else {
            return Ok(());
        };
        match refusal(&name, &runtime) {
            Some(reason) => Err(SandboxError::Egress { reason }),
            None => Ok(()),
        }
    }
}

/// Gives an execution (or session) container its way out through the egress proxy: the
/// folder of its proxy's socket at [`EGRESS_DIR`] and a `resolv.conf` with no nameserver, both
/// read-only, and the proxy variables ordinary clients read (urllib, requests, httpx, pip,
/// curl). The container keeps `--network none`: the runner relays the loopback port they
/// name to the socket, and nothing else leads anywhere.
pub fn add_egress(
    spec: &mut ContainerCreateBody,
    dir: &Path,
    resolv: &Path,
    secrets: Option<&Secrets>,
) {
    let host_config = spec.host_config.get_or_insert_with(Default::default);
    let mounts = host_config.mounts.get_or_insert_with(Vec::new);
    mounts.push(read_only_bind(dir, EGRESS_DIR));
    mounts.push(read_only_bind(resolv, "/etc/resolv.conf"));
    let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
    let env = spec.env.get_or_insert_with(Vec::new);
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push(format!("{name}={proxy}"));
        env.push(format!("{}={proxy}", name.to_lowercase()));
    }
    env.push("NO_PROXY=localhost,127.0.0.1,::1".to_string());
    env.push("no_proxy=localhost,127.0.0.1,::1".to_string());
    if let Some(secrets) = secrets {
        // Placeholders; the proxy's authority next to the system's roots for OpenSSL (urllib,
        // aiohttp, httpx), requests, curl and pip.
        env.extend(secrets.env());
        let bundle = format!("{EGRESS_DIR}/{CA_BUNDLE}");
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "PIP_CERT",
        ] {
            env.push(format!("{name}={bundle}"));
        }
    }
}

/// Why the runtime `name` cannot carry egress: gVisor without `--host-uds=open` (or `all`)
/// refuses every connect to a host socket.
fn refusal(name: &str, runtime: &bollard::models::Runtime) -> Option<String> {
    let is_gvisor = runtime
        .path
        .as_deref()
        .is_some_and(|p| p.ends_with("runsc"));
    let args = runtime.runtime_args.as_deref().unwrap_or_default();
    let passes_sockets = args
        .iter()
        .any(|a| a == "--host-uds=open" || a == "--host-uds=all");
    (is_gvisor && !passes_sockets).then(|| {
        format!(
            "the runtime `{name}` is gVisor without --host-uds=open, so the egress proxy's \
             socket cannot reach its containers\nhint: register a runtime for it in \
             /etc/docker/daemon.json, e.g. \"runsc-egress\": {{\"path\": \"/usr/bin/runsc\", \
             \"runtimeArgs\": [\"--network=none\", \"--host-uds=open\"]}}, reload dockerd \
             (SIGHUP) and use --runtime runsc-egress"
        )
    })
}

/// Removes the socket folders under `base` that no live server uses: a socket nobody listens
/// on any more (its server was killed), or a folder with no socket past [`STALE`] (made by
/// a server killed between the two).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let socket = path.join(crate::egress::SOCKET);
        let dead = match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => false,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => true,
            Err(_) => meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE),
        };
        if dead {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::Runtime;

    fn runtime(path: &str, args: &[&str]) -> Runtime {
        Runtime {
            path: Some(path.to_string()),
            runtime_args: Some(args.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn gvisor_carries_egress_only_when_it_passes_host_sockets() {
        let refused = refusal("runsc", &runtime("/usr/bin/runsc", &["--network=none"])).unwrap();
        assert!(refused.contains("--host-uds=open"), "{refused}");
        assert!(
            refused.contains("--runtime runsc-egress"),
            "the fix is named: {refused}"
        );
        let open = runtime("/usr/bin/runsc", &["--network=none", "--host-uds=open"]);
        assert_eq!(refusal("runsc-egress", &open), None);
        assert_eq!(refusal("runc", &runtime("runc", &[])), None);
        assert!(refusal("gv", &runtime("/opt/gvisor/runsc", &[])).is_some());
    }
}
