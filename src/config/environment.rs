//! The package environment's flags (`EnvironmentArgs`): the tag, pip's reach and trust,
//! the preinstall, install limits, the state folder; resolved into [`EnvironmentConfig`].

use std::time::Duration;

use clap::Args;

use super::values::defaults;
use super::values::*;
use crate::settings::{DEFAULT_ENV_TAG, EnvironmentConfig};

/// The package environment: where installs go, how pip reaches its index, what to preinstall.
#[derive(Debug, Clone, Args)]
pub struct EnvironmentArgs {
    /// Tag naming the current package environment (moves only after a successful install)
    #[arg(long, global = true, env = "PYEXEC_ENV_TAG", default_value = DEFAULT_ENV_TAG)]
    pub env_tag: String,

    /// Packages installed at start if missing, separated by spaces or commas
    #[arg(
        long,
        global = true,
        env = "PREINSTALLED_PACKAGES",
        value_name = "SPECS"
    )]
    pub preinstalled: Option<String>,

    /// Time limit for one install, in seconds (10-7200)
    #[arg(long, global = true, env = "PYEXEC_INSTALL_TIMEOUT", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(10..=7200))]
    pub install_timeout: u64,

    /// Docker network install containers use to reach the package index
    #[arg(
        long,
        global = true,
        env = "PYEXEC_INSTALL_NETWORK",
        default_value = "bridge"
    )]
    pub install_network: String,

    /// Allow source distributions (runs their build code at install time); wheels only if unset
    #[arg(long, global = true, env = "PYEXEC_ALLOW_SDIST")]
    pub allow_sdist: bool,

    /// Turn install_packages off: the tool is not listed and a call to it is refused
    /// (PREINSTALLED_PACKAGES, the operator's own, still install at start)
    #[arg(long, global = true, env = "PYEXEC_NO_INSTALL")]
    pub no_install: bool,

    /// Layers stacked before the environment is rebuilt from the base in one layer (1-100)
    #[arg(long, global = true, env = "PYEXEC_MAX_LAYERS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_layers: u32,

    /// Package index for installs (pip's own PIP_INDEX_URL)
    #[arg(long, global = true, env = "PIP_INDEX_URL", value_name = "URL")]
    pub pip_index_url: Option<String>,

    /// Extra package indexes for installs (pip's own PIP_EXTRA_INDEX_URL)
    #[arg(long, global = true, env = "PIP_EXTRA_INDEX_URL", value_name = "URLS")]
    pub pip_extra_index_url: Option<String>,

    /// Hosts pip trusts without TLS (pip's own PIP_TRUSTED_HOST)
    #[arg(long, global = true, env = "PIP_TRUSTED_HOST", value_name = "HOSTS")]
    pub pip_trusted_host: Option<String>,

    /// CA bundle pip uses for TLS, e.g. a corporate proxy's (pip's own PIP_CERT)
    #[arg(long, global = true, env = "PIP_CERT", value_name = "FILE")]
    pub pip_cert: Option<std::path::PathBuf>,

    /// Largest install layer committed, Docker-style size (1m-1024g); a larger one is refused
    #[arg(long, global = true, env = "PYEXEC_MAX_LAYER_SIZE", default_value = "2g",
          value_parser = store_size)]
    pub max_layer_size: u64,

    /// Largest package environment (base image plus every layer) an install may make (1m-1024g)
    #[arg(long, global = true, env = "PYEXEC_MAX_ENV_SIZE", default_value = "8g",
          value_parser = store_size)]
    pub max_env_size: u64,

    /// Folder for the lock that serializes installs across server processes sharing an
    /// environment tag (default: $XDG_STATE_HOME/mcp-python-executor, or ~/.local/state/…)
    #[arg(long, global = true, env = "PYEXEC_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
}

/// Proxy variables passed from the server's environment to install containers.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl EnvironmentArgs {
    pub fn resolve(&self) -> anyhow::Result<EnvironmentConfig> {
        let Some((repo, tag)) = self
            .env_tag
            .rsplit_once(':')
            .filter(|(r, t)| !r.is_empty() && !t.is_empty() && !t.contains('/'))
        else {
            anyhow::bail!(
                "--env-tag (PYEXEC_ENV_TAG) must be repository:tag, e.g. {DEFAULT_ENV_TAG}"
            );
        };
        let mut pip_env = Vec::new();
        for (name, value) in [
            ("PIP_INDEX_URL", &self.pip_index_url),
            ("PIP_EXTRA_INDEX_URL", &self.pip_extra_index_url),
            ("PIP_TRUSTED_HOST", &self.pip_trusted_host),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                pip_env.push((name.to_string(), value.clone()));
            }
        }
        for name in PROXY_VARS {
            if let Ok(value) = std::env::var(name) {
                pip_env.push((name.to_string(), value));
            }
        }
        let pip_cert = match self.pip_cert.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "--pip-cert (PIP_CERT) names {}, which cannot be read: {e}",
                    path.display()
                )
            })?),
        };
        Ok(EnvironmentConfig {
            env_tag: format!("{repo}:{tag}"),
            preinstalled: self
                .preinstalled
                .as_deref()
                .map(crate::packages::split_package_list)
                .unwrap_or_default(),
            install_timeout: Duration::from_secs(self.install_timeout),
            install_network: self.install_network.clone(),
            allow_sdist: self.allow_sdist,
            installs: !self.no_install,
            max_layers: self.max_layers,
            pip_env,
            pip_cert,
            max_layer_bytes: self.max_layer_size,
            max_env_bytes: self.max_env_size,
            state_dir: self.state_dir.clone().unwrap_or_else(default_state_dir),
        })
    }
}

impl Default for EnvironmentArgs {
    /// The documented defaults, as if no flag and no variable were given.
    fn default() -> Self {
        defaults()
    }
}

/// `$XDG_STATE_HOME/mcp-python-executor`, else `~/.local/state/mcp-python-executor`, else a
/// folder under the system's temporary directory (a service account with no home).
fn default_state_dir() -> std::path::PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = non_empty("XDG_STATE_HOME") {
        return std::path::Path::new(&state).join("mcp-python-executor");
    }
    if let Some(home) = non_empty("HOME") {
        return std::path::Path::new(&home).join(".local/state/mcp-python-executor");
    }
    // A service account with no home: a folder of this user's own in the shared temporary
    // directory (named after the uid, so another user cannot have made it first unnoticed:
    // `private_dir` refuses one that is not this user's).
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("mcp-python-executor-{uid}"))
}
