//! The settings every subsystem runs with, already validated: plain data, no parsing and no
//! behaviour. `config/` (the command line and `PYEXEC_*` variables) produces them; the
//! sandbox, the environment and the transports read them. A leaf, so that no subsystem
//! depends on the command line or on another subsystem to learn its settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::auth::Tokens;

/// The image `make image` builds and every call runs in unless `--image` says otherwise.
pub const DEFAULT_IMAGE: &str = "mcp-python-executor/base:latest";

/// The tag of the current package environment unless `--env-tag` says otherwise.
pub const DEFAULT_ENV_TAG: &str = "mcp-python-executor/env:current";

/// Validated environment settings.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    /// Repository and tag of the current environment image.
    pub env_tag: String,
    /// Specs to have installed at start (unvalidated text items).
    pub preinstalled: Vec<String>,
    /// Time limit for one install.
    pub install_timeout: Duration,
    /// Network of install containers.
    pub install_network: String,
    /// Whether sdists may be built.
    pub allow_sdist: bool,
    /// Whether clients may install (`install_packages`); `--no-install` turns it off.
    pub installs: bool,
    /// Layers before a rebuild from the base.
    pub max_layers: u32,
    /// pip and proxy variables for the install container.
    pub pip_env: Vec<(String, String)>,
    /// PEM text of the CA bundle pip must trust, read from `--pip-cert` at start.
    pub pip_cert: Option<String>,
    /// Largest layer one install may commit, in bytes.
    pub max_layer_bytes: u64,
    /// Largest environment (base plus layers) an install may leave, in bytes.
    pub max_env_bytes: u64,
    /// Where the cross-process install lock lives.
    pub state_dir: std::path::PathBuf,
}

/// Resource limits applied to every execution container.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time from start until the server kills the container.
    pub timeout: Duration,
    /// Memory (and memory+swap, so no swap) in bytes.
    pub memory_bytes: i64,
    /// CPU quota in billionths of a CPU, as Docker's `NanoCpus`.
    pub nano_cpus: i64,
    /// Maximum number of processes and threads.
    pub pids: i64,
    /// Bytes kept per output stream before truncation.
    pub max_output_bytes: usize,
    /// Largest accepted code + stdin, in bytes.
    pub max_input_bytes: usize,
    /// Size of the /tmp and /dev/shm tmpfs, in bytes; also the largest file a program may write.
    pub tmp_bytes: i64,
}

/// What comes back from a call besides its status: text sized for a model, figures, files.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// Bytes of stdout and stderr text in one answer, together.
    pub max_answer_bytes: usize,
    /// Images per answer.
    pub max_images: usize,
    /// Largest encoded image in an answer.
    pub max_image_bytes: usize,
    /// Bytes of files (figures included) a container may hand back.
    pub max_files_bytes: usize,
    /// Where each call's files and full output are also saved, when set.
    pub output_dir: Option<std::path::PathBuf>,
    /// Most the call folders under `output_dir` hold together, in bytes.
    pub output_dir_max: u64,
}

/// Everything the sandbox needs to know, validated.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Image executions run in.
    pub image: String,
    /// Docker network mode for executions (`none` by default).
    pub network: String,
    /// OCI runtime name, when not the daemon's default.
    pub runtime: Option<String>,
    /// Containers allowed to exist at once.
    pub concurrency: usize,
    /// Calls allowed to wait for a slot.
    pub max_queue: usize,
    /// Bytes of code and input waiting calls may hold together.
    pub max_queue_bytes: usize,
    /// Per-container limits.
    pub limits: Limits,
    /// The warm pool.
    pub pool: PoolConfig,
    /// Answers, figures and files.
    pub outputs: OutputConfig,
    /// Host folder mounted read-only at /workspace in executions (checked at start).
    pub workspace: Option<std::path::PathBuf>,
    /// Sessions: how many, and how long they live.
    pub sessions: SessionConfig,
    /// The egress proxy's allowlist and limits (`--allow-host`); `None`: no network at all.
    pub egress: Option<std::sync::Arc<crate::egress::Policy>>,
}

/// How many sessions may be open, and when one is closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// Sessions open at once; 0 turns sessions off.
    pub max: usize,
    /// Sessions one owner (an HTTP token) may have open at once.
    pub max_per_owner: usize,
    /// Time without a call after which a session is closed.
    pub idle: Duration,
    /// Time after its creation at which a session is closed.
    pub max_age: Duration,
}

/// Where `--http` binds when given without an address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8808";

/// What the HTTP surface accepts (its `Debug` shows the count of tokens, never a token).
#[derive(Debug)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// `None`: no authentication (`--http-insecure-no-auth`, loopback only).
    pub tokens: Option<Arc<RwLock<Tokens>>>,
    /// The file tokens were read from, reread on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub session_idle: Duration,
    pub max_body: usize,
    /// The caps on open connections, before any fitting to the descriptor limit.
    pub connections: ConnectionLimits,
}

/// The caps on open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max_open: usize,
    /// Open connections from one peer (IPv4 address or IPv6 /64).
    pub max_per_peer: usize,
}

/// How many containers wait, started, for a call, and for how long at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolConfig {
    /// Warm containers kept ready; 0 turns the pool off (every call starts its own).
    pub size: usize,
    /// Age past which an unused warm container is replaced.
    pub max_age: Duration,
}
