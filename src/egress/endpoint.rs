//! One container's way out: a [`Proxy`] of its own behind a Unix socket in a folder of its
//! own, which the launcher bind-mounts into the container (the container has no network; its
//! runner relays the loopback port `HTTP_PROXY` names to this socket). A socket per container
//! means every connection is the call's by construction: no address to map back to a call,
//! nothing another container can reach. The endpoint lives as long as its container's guard;
//! when it is dropped, its proxy stops (every connection and tunnel ends) and its folder is
//! removed.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::ledger::Attempt;
use super::proxy::{Policy, Proxy};

/// The socket's name in an endpoint's folder.
pub const SOCKET: &str = "proxy.sock";
/// With secrets: the certificates the sandbox trusts (the system's roots and the proxy's
/// authority), next to the socket.
pub const CA_BUNDLE: &str = "ca.pem";
/// Client connections one endpoint serves at once (the runner relays at most 128); more are
/// closed unanswered, so a program that connects to the socket itself cannot make the server
/// hold more.
const MAX_CLIENTS: usize = 256;

/// A container's proxy, its socket and its folder.
pub struct Endpoint {
    proxy: Proxy,
    dir: PathBuf,
}

impl Endpoint {
    /// Makes `base/name/` (mode 0711: the container's uid may reach the socket, list nothing),
    /// binds the socket in it (0666: whichever uid the call runs as) and starts serving it.
    /// `base` must be the server's own private folder.
    pub fn open(base: &Path, name: &str, policy: Arc<Policy>) -> std::io::Result<Self> {
        let dir = base.join(name);
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        std::fs::DirBuilder::new().mode(0o711).create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        if let Some(secrets) = &policy.secrets {
            let bundle = dir.join(CA_BUNDLE);
            std::fs::write(&bundle, secrets.authority().bundle())?;
            std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644))?;
        }
        let endpoint = Self {
            proxy: Proxy::new(policy),
            dir,
        };
        let path = endpoint.dir.join(SOCKET);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let proxy = endpoint.proxy.clone();
        endpoint.proxy.tasks().spawn(accept(listener, proxy));
        Ok(endpoint)
    }

    /// The folder to mount (it holds [`SOCKET`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the container tried since it started (or since the last [`Endpoint::take`]).
    pub fn report(&self) -> Vec<Attempt> {
        self.proxy.ledger().report()
    }

    /// What the container tried since the last take, and a fresh budget for its next call
    /// (a session's calls each report and spend their own).
    pub fn take(&self) -> Vec<Attempt> {
        self.proxy.ledger().take()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.proxy.stop();
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), %error, "could not remove an egress socket's folder");
        }
    }
}

/// Accepts the container's connections until the proxy stops, each served on a task of the
/// proxy's own, at most [`MAX_CLIENTS`] at once.
async fn accept(listener: UnixListener, proxy: Proxy) {
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = proxy.stopped().cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(place) = clients.clone().try_acquire_owned() else {
                    continue; // dropped: closed unanswered
                };
                let serving = proxy.clone();
                proxy.tasks().spawn(async move {
                    serving.serve_connection(stream).await;
                    drop(place);
                });
            }
            // Out of descriptors, most likely: give the ones in use a moment to end.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
