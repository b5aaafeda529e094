//! Every setting of the server in one place: its flag, its `PYEXEC_` environment fallback,
//! its default and its valid range.
//!
//! `SandboxArgs` is what clap parses; [`SandboxArgs::resolve`] turns it into the validated
//! [`SandboxConfig`] the rest of the program uses, so a value out of range is refused at start
//! with a message naming the flag and the variable, never discovered mid-call.

use std::time::Duration;

use clap::Args;

pub use crate::settings::{
    DEFAULT_ENV_TAG, DEFAULT_IMAGE, EnvironmentConfig, Limits, OutputConfig, PoolConfig,
    SandboxConfig, SessionConfig,
};

/// The sandbox settings a user can change, as flags with `PYEXEC_*` environment fallbacks.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Docker image each call runs in (built by `mcp-python-executor image build`)
    #[arg(long, global = true, env = "PYEXEC_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Wall-clock limit per call, in seconds (1-3600); the program is killed when it passes
    #[arg(long, global = true, env = "PYEXEC_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// Memory limit per call, Docker-style size (e.g. 512m, 1g; 16m-64g); swap is not allowed
    #[arg(long, global = true, env = "PYEXEC_MEMORY", default_value = "512m", value_parser = memory_size)]
    pub memory: u64,

    /// CPUs per call (0.05-64)
    #[arg(long, global = true, env = "PYEXEC_CPUS", default_value_t = 1.0, value_parser = cpus)]
    pub cpus: f64,

    /// Maximum processes and threads per call (8-32768)
    #[arg(long, global = true, env = "PYEXEC_PIDS", default_value_t = 128,
          value_parser = clap::value_parser!(i64).range(8..=32768))]
    pub pids: i64,

    /// Docker network for executions; `none` means no network at all
    #[arg(long, global = true, env = "PYEXEC_NETWORK", default_value = "none")]
    pub network: String,

    /// OCI runtime for executions, e.g. `runsc` for gVisor (default: the daemon's default)
    #[arg(long, global = true, env = "PYEXEC_RUNTIME")]
    pub runtime: Option<String>,

    /// Output kept per stream (stdout, stderr), Docker-style size (1k-64m); the rest is dropped
    #[arg(long, global = true, env = "PYEXEC_MAX_OUTPUT", default_value = "1m", value_parser = output_size)]
    pub max_output: u64,

    /// Largest request accepted: code plus input data, Docker-style size (1k-12m)
    #[arg(long, global = true, env = "PYEXEC_MAX_INPUT", default_value = "4m", value_parser = input_size)]
    pub max_input: u64,

    /// Size of the writable /tmp (and /dev/shm) inside each container (1m-4g)
    #[arg(long, global = true, env = "PYEXEC_TMP_SIZE", default_value = "64m", value_parser = tmp_size)]
    pub tmp_size: u64,

    /// Containers running at once; further calls queue (1-256; default: 2 x CPU cores)
    #[arg(long, global = true, env = "PYEXEC_CONCURRENCY",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: Option<u64>,

    /// Calls that may wait for a slot; further calls are answered at once that the server is
    /// busy (0-100000)
    #[arg(long, global = true, env = "PYEXEC_MAX_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub max_queue: u64,

    /// Bytes of code and input the waiting calls may hold together (1m-64g); a call that
    /// would pass it is answered busy at once (a call alone in the queue always waits)
    #[arg(long, global = true, env = "PYEXEC_MAX_QUEUE_BYTES", default_value = "64m",
          value_parser = queue_size)]
    pub max_queue_bytes: u64,

    /// Containers kept started ahead of time, each waiting for one call (0-64; 0 = none)
    #[arg(long, global = true, env = "PYEXEC_POOL_SIZE", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub pool_size: u64,

    /// Seconds an unused warm container waits before it is replaced by a fresh one (10-3600)
    #[arg(long, global = true, env = "PYEXEC_POOL_MAX_AGE", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub pool_max_age: u64,

    /// Text of an answer, both streams together (1k-64m; 64k is about 20k tokens): the start
    /// and the end of each stream are kept, the middle is left out and marked
    #[arg(long, global = true, env = "PYEXEC_MAX_ANSWER", default_value = "64k", value_parser = output_size)]
    pub max_answer: u64,

    /// Images returned per call, figures and image files together (0-64)
    #[arg(long, global = true, env = "PYEXEC_MAX_IMAGES", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub max_images: u64,

    /// Largest image returned, encoded (64k-16m); larger ones are downscaled first
    #[arg(long, global = true, env = "PYEXEC_MAX_IMAGE_SIZE", default_value = "1m",
          value_parser = image_size)]
    pub max_image_size: u64,

    /// Files (figures included) returned per call from /tmp/outputs, in total (0-256m)
    #[arg(long, global = true, env = "PYEXEC_MAX_FILES", default_value = "10m", value_parser = files_size)]
    pub max_files: u64,

    /// Host folder where each call's files and full output are also saved, under a folder
    /// named after the call, and linked from the answer (default: not saved)
    #[arg(long, global = true, env = "PYEXEC_OUTPUT_DIR", value_name = "DIR")]
    pub output_dir: Option<std::path::PathBuf>,

    /// Most the call folders under --output-dir may hold together (1m-1024g); the oldest are
    /// removed first to make room
    #[arg(long, global = true, env = "PYEXEC_OUTPUT_DIR_MAX", default_value = "1g",
          value_parser = store_size)]
    pub output_dir_max: u64,

    /// Host folder mounted read-only at /workspace in every execution, so code can read your
    /// data (default: none; never /, your home itself or a folder holding the Docker socket)
    #[arg(long, global = true, env = "PYEXEC_WORKSPACE", value_name = "DIR")]
    pub workspace: Option<std::path::PathBuf>,

    /// Sessions (create_session) open at once, each one container (0-64; 0 turns them off)
    #[arg(long, global = true, env = "PYEXEC_MAX_SESSIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub max_sessions: u64,

    /// Sessions one HTTP token may have open at once (1-64), so no token takes every place;
    /// on stdio only --max-sessions counts
    #[arg(long, global = true, env = "PYEXEC_MAX_SESSIONS_PER_TOKEN", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_sessions_per_token: u64,

    /// A session with no call for this long is closed: seconds, or with s, m or h (5s-24h)
    #[arg(long, global = true, env = "PYEXEC_SESSION_IDLE", default_value = "10m",
          value_parser = session_idle)]
    pub session_idle: u64,

    /// A session is closed this long after it was created, busy or not: seconds, or with s, m
    /// or h (5s-24h)
    #[arg(long, global = true, env = "PYEXEC_SESSION_MAX_AGE", default_value = "1h",
          value_parser = session_idle)]
    pub session_max_age: u64,
}

/// A session lifetime in seconds: `90`, `90s`, `10m` or `1h`, from 5 s to 24 h.
fn session_idle(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        _ => (text, 1),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a duration: give seconds, or e.g. 90s, 10m, 1h"))?;
    if !(5..=86_400).contains(&seconds) {
        return Err(format!("`{text}` is out of range: from 5s to 24h"));
    }
    Ok(seconds)
}

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

/// Serving MCP over Streamable HTTP instead of stdio, for several clients at once.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Serve MCP over Streamable HTTP at /mcp on this address instead of stdio
    /// (default address when given without one: 127.0.0.1:8808)
    #[arg(long, global = true, env = "PYEXEC_HTTP", value_name = "ADDR", num_args = 0..=1,
          default_missing_value = crate::settings::DEFAULT_ADDR)]
    pub http: Option<String>,

    /// The one bearer token clients must send (prefer the variable: flags show in `ps`)
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub http_token: Option<String>,

    /// File of bearer tokens, one per line (`#` comments allowed), reread on SIGHUP
    #[arg(long, global = true, env = "PYEXEC_HTTP_TOKENS", value_name = "FILE")]
    pub http_tokens: Option<std::path::PathBuf>,

    /// Serve HTTP without authentication (loopback addresses only)
    #[arg(long, global = true, env = "PYEXEC_HTTP_INSECURE_NO_AUTH")]
    pub http_insecure_no_auth: bool,

    /// Browser origins allowed to call (e.g. https://app.example.com:443); default: loopback
    /// origins only. Comma-separated in the variable
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub http_allowed_origin: Vec<String>,

    /// Host names clients reach the server by (DNS-rebinding defence); default: loopback
    /// names. Comma-separated in the variable
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub http_allowed_host: Vec<String>,

    /// Seconds an idle HTTP session lives (60-86400)
    #[arg(long, global = true, env = "PYEXEC_HTTP_SESSION_IDLE", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..=86400))]
    pub http_session_idle: u64,

    /// Open HTTP connections in all, before authentication (lowered to fit the open-files
    /// limit); beyond it a connection is answered 503 and closed
    #[arg(long, global = true, env = "PYEXEC_HTTP_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,

    /// Open HTTP connections from one address (an IPv6 /64 counts as one); behind a reverse
    /// proxy every client is the proxy's address, so raise it there
    #[arg(long, global = true, env = "PYEXEC_HTTP_MAX_CONNECTIONS_PER_PEER",
          default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections_per_peer: u64,
}

impl HttpArgs {
    /// The HTTP settings when `--http` is given: refuses to serve without a token unless
    /// told to, and never without one on an address other machines can reach.
    pub fn resolve(
        &self,
        max_input: usize,
    ) -> anyhow::Result<Option<crate::settings::HttpSettings>> {
        use std::sync::{Arc, RwLock};
        let Some(addr) = &self.http else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "--http (PYEXEC_HTTP) `{addr}` is not an address; use e.g. 127.0.0.1:8808"
            )
        })?;
        let mut tokens = crate::auth::Tokens::default();
        if let Some(token) = &self.http_token {
            tokens = crate::auth::Tokens::single(token)
                .map_err(|e| anyhow::anyhow!("PYEXEC_HTTP_TOKEN: {e}"))?;
        }
        if let Some(file) = &self.http_tokens {
            if !tokens.is_empty() {
                anyhow::bail!("give PYEXEC_HTTP_TOKEN or --http-tokens, not both");
            }
            tokens = crate::auth::read_tokens(file)?;
        }
        if tokens.is_empty() {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "--http {addr} is reachable from other machines: set PYEXEC_HTTP_TOKEN or \
                     --http-tokens (serving without authentication is for loopback only)"
                );
            }
            if !self.http_insecure_no_auth {
                anyhow::bail!(
                    "--http needs a token: set PYEXEC_HTTP_TOKEN or --http-tokens FILE, or pass \
                     --http-insecure-no-auth to serve this loopback address without one"
                );
            }
        }
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        hosts.extend(self.http_allowed_host.iter().cloned());
        let origins = if self.http_allowed_origin.is_empty() {
            ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .to_vec()
        } else {
            self.http_allowed_origin.clone()
        };
        Ok(Some(crate::settings::HttpSettings {
            addr,
            tokens: (!tokens.is_empty()).then(|| Arc::new(RwLock::new(tokens))),
            tokens_file: self.http_tokens.clone(),
            allowed_origins: origins,
            allowed_hosts: hosts,
            session_idle: Duration::from_secs(self.http_session_idle),
            connections: crate::settings::ConnectionLimits {
                max_open: self.http_max_connections as usize,
                max_per_peer: self.http_max_connections_per_peer as usize,
            },
            // A request is the code and input plus JSON framing and escaping.
            max_body: max_input * 2 + (64 << 10),
        }))
    }
}

/// `image build`: how the base image is made (the image's name is the global `--image`).
/// The variables without `PYEXEC_` are those images/bootstrap-offline.sh has always read.
#[derive(Debug, Clone, Args)]
pub struct ImageBuildArgs {
    /// Rebuild even when the image is up to date (and debootstrap again on the offline path)
    #[arg(long, env = "PYEXEC_IMAGE_FORCE")]
    pub force: bool,

    /// Registry base tried first (used when the engine has it or can pull it)
    #[arg(long, env = "PYEXEC_BASE_IMAGE", value_name = "IMAGE",
          default_value = crate::base_image::DEFAULT_BASE)]
    pub base: String,

    /// Skip the registry base: build on a Debian root filesystem imported into the engine
    #[arg(long, env = "PYEXEC_OFFLINE")]
    pub offline: bool,

    /// Root filesystem to import for the offline path instead of debootstrapping one
    /// (a Debian with python3 and python3-venv)
    #[arg(long, env = "PYEXEC_ROOTFS", value_name = "DIR")]
    pub rootfs: Option<std::path::PathBuf>,

    /// Debian suite debootstrap installs on the offline path
    #[arg(
        long,
        env = "DEBIAN_SUITE",
        default_value = "bookworm",
        value_name = "SUITE"
    )]
    pub debian_suite: String,

    /// Debian mirror debootstrap reads (a local mirror on air-gapped hosts)
    #[arg(
        long,
        env = "DEBIAN_MIRROR",
        default_value = "http://deb.debian.org/debian",
        value_name = "URL"
    )]
    pub debian_mirror: String,

    /// Where debootstrap keeps the packages it fetched, for the next build
    #[arg(
        long,
        env = "DEBOOTSTRAP_CACHE",
        value_name = "DIR",
        default_value = "/var/cache/mcp-python-executor/debootstrap"
    )]
    pub debootstrap_cache: std::path::PathBuf,
}

impl ImageBuildArgs {
    /// The plan for building `image`, checked.
    pub fn resolve(&self, image: &str) -> anyhow::Result<crate::base_image::BuildPlan> {
        // Both go to debootstrap's command line: neither may read as an option there.
        let suite_ok = self
            .debian_suite
            .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .debian_suite
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !suite_ok {
            anyhow::bail!(
                "--debian-suite (DEBIAN_SUITE) must be a Debian suite name such as bookworm, \
                 not {:?}",
                self.debian_suite
            );
        }
        let mirror_ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|scheme| self.debian_mirror.starts_with(scheme))
            && !self.debian_mirror.contains(char::is_whitespace);
        if !mirror_ok {
            anyhow::bail!(
                "--debian-mirror (DEBIAN_MIRROR) must be an http://, https:// or file:/// URL, \
                 not {:?}",
                self.debian_mirror
            );
        }
        if let Some(dir) = &self.rootfs
            && !dir.is_dir()
        {
            anyhow::bail!(
                "--rootfs (PYEXEC_ROOTFS) {} is not a directory",
                dir.display()
            );
        }
        Ok(crate::base_image::BuildPlan {
            tag: image.to_string(),
            base: self.base.clone(),
            force: self.force,
            offline: self.offline || self.rootfs.is_some(),
            rootfs: self.rootfs.clone(),
            suite: self.debian_suite.clone(),
            mirror: self.debian_mirror.clone(),
            cache: self.debootstrap_cache.clone(),
        })
    }
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

/// A group of settings as if no flag was given (environment fallbacks still apply).
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("mcp-python-executor"));
    T::from_arg_matches(&command.get_matches_from(["mcp-python-executor"]))
        .expect("the defaults of every setting are valid")
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

impl SandboxArgs {
    /// Validates the parsed arguments and fills in computed defaults.
    pub fn resolve(&self) -> anyhow::Result<SandboxConfig> {
        if self.image.trim().is_empty() {
            anyhow::bail!("--image (PYEXEC_IMAGE) must name a Docker image, e.g. {DEFAULT_IMAGE}");
        }
        if self.network.trim().is_empty() {
            anyhow::bail!("--network (PYEXEC_NETWORK) must name a Docker network, e.g. none");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let concurrency = self.concurrency.map_or(2 * cores, |c| c as usize);
        Ok(SandboxConfig {
            image: self.image.clone(),
            network: self.network.clone(),
            runtime: self.runtime.clone().filter(|r| !r.trim().is_empty()),
            concurrency,
            max_queue: self.max_queue as usize,
            max_queue_bytes: self.max_queue_bytes as usize,
            limits: Limits {
                timeout: Duration::from_secs(self.timeout),
                memory_bytes: self.memory as i64,
                nano_cpus: (self.cpus * 1e9).round() as i64,
                pids: self.pids,
                max_output_bytes: self.max_output as usize,
                max_input_bytes: self.max_input as usize,
                tmp_bytes: self.tmp_size as i64,
            },
            pool: PoolConfig {
                size: self.pool_size as usize,
                max_age: Duration::from_secs(self.pool_max_age),
            },
            outputs: OutputConfig {
                max_answer_bytes: self.max_answer as usize,
                max_images: self.max_images as usize,
                max_image_bytes: self.max_image_size as usize,
                max_files_bytes: self.max_files as usize,
                output_dir: match &self.output_dir {
                    Some(dir) => Some(output_dir(dir)?),
                    None => None,
                },
                output_dir_max: self.output_dir_max,
            },
            workspace: match &self.workspace {
                Some(dir) => Some(workspace(dir, &docker_sockets(), home().as_deref())?),
                None => None,
            },
            sessions: SessionConfig {
                max: self.max_sessions as usize,
                max_per_owner: self.max_sessions_per_token as usize,
                idle: Duration::from_secs(self.session_idle),
                max_age: Duration::from_secs(self.session_max_age),
            },
        })
    }
}

/// Creates the output folder if needed; refuses one that cannot be made or is not a folder.
fn output_dir(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // Made private to this user if it does not exist (an existing folder keeps its mode).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "--output-dir (PYEXEC_OUTPUT_DIR) {}: {e}; name a folder this user can write",
                dir.display()
            )
        })?;
    dir.canonicalize()
        .map_err(|e| anyhow::anyhow!("--output-dir (PYEXEC_OUTPUT_DIR) {}: {e}", dir.display()))
}

/// The workspace folder, resolved; refused when mounting it would hand a program more than
/// the user's data: the whole host (`/`), the user's home itself, or any folder holding a
/// Docker socket (a read-only mount does not stop a connect to a socket).
pub fn workspace(
    dir: &std::path::Path,
    docker_sockets: &[std::path::PathBuf],
    home: Option<&std::path::Path>,
) -> anyhow::Result<std::path::PathBuf> {
    let named = || format!("--workspace (PYEXEC_WORKSPACE) {}", dir.display());
    let resolved = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("{}: {e}; name an existing folder", named()))?;
    if !resolved.is_dir() {
        anyhow::bail!("{} is not a folder", named());
    }
    if resolved == std::path::Path::new("/") {
        anyhow::bail!(
            "{} is the whole host; name the folder with your data",
            named()
        );
    }
    for socket in docker_sockets {
        let socket = socket.canonicalize().unwrap_or_else(|_| socket.clone());
        if socket.starts_with(&resolved) {
            anyhow::bail!(
                "{} holds the Docker socket {}, which would give code control of Docker; name \
                 a folder with only your data",
                named(),
                socket.display()
            );
        }
    }
    if let Some(home) = home.and_then(|h| h.canonicalize().ok())
        && resolved == home
    {
        anyhow::bail!(
            "{} is your home folder itself (keys, tokens, browser profiles); name a folder \
             inside it that holds the data",
            named()
        );
    }
    Ok(resolved)
}

/// The Docker sockets a workspace must not hold: the default one (a daemon may listen there
/// even when `DOCKER_HOST` points elsewhere) and the one `DOCKER_HOST` names, if a socket.
fn docker_sockets() -> Vec<std::path::PathBuf> {
    let mut sockets = vec![std::path::PathBuf::from("/var/run/docker.sock")];
    if let Some(path) = crate::docker::docker_host().strip_prefix("unix://") {
        sockets.push(path.into());
    }
    sockets
}

fn home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(Into::into)
}

impl Default for SandboxArgs {
    /// The documented defaults, as if no flag and no variable were given.
    fn default() -> Self {
        defaults()
    }
}

/// Parses a Docker-style size: a number with an optional binary unit `b`, `k`, `m` or `g`
/// (also accepted: `kb`/`kib` and so on, any case), as `docker run --memory` does.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size; use a number with k, m or g, e.g. 512m"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use k, m or g"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn size_in(text: &str, min: u64, max: u64, min_text: &str, max_text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size < min || size > max {
        return Err(format!(
            "`{text}` is out of range: use {min_text} to {max_text}"
        ));
    }
    Ok(size)
}

fn memory_size(text: &str) -> Result<u64, String> {
    size_in(text, 16 << 20, 64 << 30, "16m", "64g")
}

fn output_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 10, 64 << 20, "1k", "64m")
}

fn image_size(text: &str) -> Result<u64, String> {
    size_in(text, 64 << 10, 16 << 20, "64k", "16m")
}

fn files_size(text: &str) -> Result<u64, String> {
    size_in(text, 0, 256 << 20, "0", "256m")
}

fn input_size(text: &str) -> Result<u64, String> {
    // The stdio channel refuses lines over 16 MiB (`stdio::MAX_LINE`), and a request carries
    // JSON escaping on top of the code, so a larger limit could never be reached.
    size_in(text, 1 << 10, 12 << 20, "1k", "12m")
}

fn queue_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 64 << 30, "1m", "64g")
}

fn store_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 1 << 40, "1m", "1024g")
}

fn tmp_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 4 << 30, "1m", "4g")
}

fn cpus(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs, e.g. 1 or 0.5"))?;
    if !(0.05..=64.0).contains(&value) {
        return Err(format!("`{text}` is out of range: use 0.05 to 64 CPUs"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lifetimes_take_seconds_or_a_unit_within_range() {
        assert_eq!(session_idle("600"), Ok(600));
        assert_eq!(session_idle("90s"), Ok(90));
        assert_eq!(session_idle("10m"), Ok(600));
        assert_eq!(session_idle(" 1h "), Ok(3600));
        for bad in [
            "",
            "m",
            "-5",
            "4s",
            "25h",
            "1d",
            "1.5h",
            "99999999999999999999h",
            "10 m",
        ] {
            assert!(session_idle(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_use_docker_binary_units() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size(" 2 mb "), Ok(2 << 20));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_hint() {
        assert!(parse_size("").unwrap_err().contains("512m"));
        assert!(parse_size("12q").unwrap_err().contains("unit"));
        assert!(parse_size("-1m").is_err());
        assert!(
            parse_size("99999999999999g")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn out_of_range_values_name_the_range() {
        assert!(memory_size("1m").unwrap_err().contains("16m to 64g"));
        assert!(output_size("100g").is_err());
        assert!(cpus("0").unwrap_err().contains("0.05"));
        assert!(cpus("lots").is_err());
        assert_eq!(cpus("1.5"), Ok(1.5));
    }

    #[test]
    fn defaults_resolve_to_the_documented_limits() {
        let config = SandboxArgs::default().resolve().unwrap();
        assert_eq!(config.image, DEFAULT_IMAGE);
        assert_eq!(config.network, "none");
        assert_eq!(config.limits.timeout, Duration::from_secs(30));
        assert_eq!(config.limits.memory_bytes, 512 << 20);
        assert_eq!(config.limits.nano_cpus, 1_000_000_000);
        assert_eq!(config.limits.pids, 128);
        assert_eq!(config.limits.max_output_bytes, 1 << 20);
        assert!(config.concurrency >= 2);
        assert_eq!(config.outputs.max_answer_bytes, 64 << 10);
        assert_eq!(config.outputs.max_images, 8);
        assert_eq!(config.outputs.max_image_bytes, 1 << 20);
        assert_eq!(config.outputs.max_files_bytes, 10 << 20);
        assert_eq!(config.outputs.output_dir, None);
        assert_eq!(config.workspace, None);
    }

    #[test]
    fn http_needs_a_token_and_never_serves_other_machines_without_one() {
        let args = |argv: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                http: HttpArgs,
            }
            let argv = std::iter::once("x").chain(argv.iter().copied());
            <Cli as clap::Parser>::try_parse_from(argv).unwrap().http
        };
        assert!(
            args(&[]).resolve(1 << 20).unwrap().is_none(),
            "stdio by default"
        );
        let error = args(&["--http"]).resolve(1 << 20).unwrap_err().to_string();
        assert!(error.contains("needs a token"), "{error}");
        let open = args(&["--http", "--http-insecure-no-auth"])
            .resolve(1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(open.addr.to_string(), crate::settings::DEFAULT_ADDR);
        assert!(open.tokens.is_none());
        let error = args(&["--http", "0.0.0.0:8808", "--http-insecure-no-auth"])
            .resolve(1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("reachable from other machines"), "{error}");
        let served = args(&[
            "--http",
            "0.0.0.0:8808",
            "--http-token",
            "t-0123456789abcdef",
        ])
        .resolve(1 << 20)
        .unwrap()
        .unwrap();
        assert!(served.tokens.is_some());
        assert!(
            served
                .allowed_origins
                .iter()
                .all(|o| o.starts_with("http://"))
        );
        let error = args(&["--http", "--http-token", "short"])
            .resolve(1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least 16"), "{error}");
        assert!(
            !error.contains("short"),
            "the token is never shown: {error}"
        );
    }

    #[test]
    fn a_workspace_that_would_expose_the_host_is_refused() {
        let root = std::env::temp_dir().join(format!("pyexec-ws-{}", std::process::id()));
        let home = root.join("home");
        let data = home.join("data");
        let run = root.join("run");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let socket = run.join("docker.sock");
        std::fs::write(&socket, b"").unwrap();
        // The second socket is the one that matters: every one listed is checked.
        let sockets = [root.join("elsewhere/docker.sock"), socket.clone()];
        let check = |dir: &std::path::Path| workspace(dir, &sockets, Some(&home));
        assert_eq!(check(&data).unwrap(), data.canonicalize().unwrap());
        let refused = |dir: &std::path::Path, why: &str| {
            let error = check(dir).unwrap_err().to_string();
            assert!(error.contains(why), "{dir:?}: {error}");
        };
        refused(std::path::Path::new("/"), "whole host");
        refused(&home, "home folder itself");
        refused(&run, "Docker socket");
        refused(&root, "Docker socket");
        // A path with .. that resolves to the home is the home.
        refused(&data.join(".."), "home folder itself");
        refused(&root.join("missing"), "existing folder");
        // A symlink to the socket's folder is that folder.
        let link = data.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&run, &link).unwrap();
        refused(&link, "Docker socket");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Suite and mirror reach debootstrap's command line: a value that would read as an option
    /// there (`--foreign`, `--keyring=…`) or is no mirror URL is refused at start.
    #[test]
    fn image_build_refuses_a_suite_or_mirror_that_debootstrap_would_read_as_an_option() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            args: ImageBuildArgs,
        }
        let plan = |extra: &[&str]| {
            let argv = std::iter::once("x").chain(extra.iter().copied());
            <Flags as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .args
                .resolve("img:1")
        };
        assert!(plan(&[]).is_ok());
        assert!(plan(&["--debian-mirror", "file:///srv/debian"]).is_ok());
        for hostile in [
            &["--debian-suite=--foreign"][..],
            &["--debian-suite=-x"],
            &["--debian-suite=../etc"],
            &["--debian-mirror=--keyring=/tmp/k"],
            &["--debian-mirror=ftp://x"],
            &["--debian-mirror=http://a b"],
        ] {
            assert!(plan(hostile).is_err(), "{hostile:?} was accepted");
        }
    }
}
