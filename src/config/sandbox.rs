//! The sandbox's flags (`SandboxArgs`): image, limits, concurrency, pool, outputs,
//! workspace, sessions; and their resolution into [`SandboxConfig`], with the checks that
//! need the host (the output folder is made private, the workspace may not expose the host).

use std::time::Duration;

use clap::Args;

use super::values::defaults;
use super::values::*;
use crate::settings::{
    DEFAULT_IMAGE, Limits, OutputConfig, PoolConfig, SandboxConfig, SessionConfig,
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

    #[command(flatten)]
    pub egress: super::egress::EgressArgs,
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
            egress: self
                .egress
                .resolve(&self.network, &crate::engine::docker_host())?,
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
    if let Some(path) = crate::engine::docker_host().strip_prefix("unix://") {
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
