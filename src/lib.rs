//! mcp-python-executor: an MCP server that runs Python in short-lived, hardened Docker
//! containers, one fresh container per call.
//!
//! # Layout
//! - [`config`]: every setting (flag, `PYEXEC_*` variable, default, range) and its validation.
//! - [`stdio`]: the line gateway between the client's pipes and rmcp: bad requests get answers.
//! - [`http`]: MCP over Streamable HTTP with bearer tokens, Origin/Host checks, `/healthz`.
//! - [`intake`]: what a request may cost before rmcp parses it (values counted, bodies
//!   read under a shared byte budget), at both transports' edge.
//! - [`listener`]: HTTP's accept loop: connection caps, header timeout, descriptor limit,
//!   all before authentication.
//! - [`private_dir`]: the state folder and its lock files, this user's only, never through a
//!   link.
//! - [`saved`]: each call's files and output under `--output-dir`, private, the folder bounded.
//! - [`mcp`]: the MCP tools, thin: arguments, descriptions, answers as MCP content (figures
//!   and files among them), and one notifier for live output and pip's output.
//! - [`executor`]: the policy of one call: the preinstall wait, plain or session, the retry
//!   when the environment image vanished, counting; installs' grants.
//! - [`serving`]: what runs while serving (pool, reaper, preinstall) and the stdio and HTTP
//!   entry points, each taking a shutdown future.
//! - [`sandbox`]: one call's container: hardened create, attach, stream, wait, limits, remove;
//!   the guard that removes it on every path, and the startup reaper.
//! - [`base_image`]: `image build`: the recipe sent through the engine's API, the offline
//!   root filesystem imported the same way.
//! - [`docker`]: the lazy daemon connection and Docker errors turned into next steps.
//! - [`ssh`]: `DOCKER_HOST=ssh://…`: one `ssh … docker system dial-stdio` per pooled connection.
//! - [`doctor`]: the host check behind `mcp-python-executor doctor`.
//! - [`image`]: the package environment: the current image, installs as checked, committed
//!   layers, the cross-process install lock and the removal of superseded layers.
//! - [`packages`]: package spec validation (PEP 508) and pip's argument vector.
//! - [`metrics`]: counters and gauges for `/metrics`, in the Prometheus text format.
//!
//! A call goes `mcp` → `executor` → [`sandbox::Sandbox::execute`] → Docker, and back as an
//! [`sandbox::ExecutionResult`] that `mcp` renders. `main.rs` only parses the command line
//! and wires these together.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mcp_python_executor::{config::SandboxArgs, sandbox::{ExecutionRequest, Sandbox}};
//! let sandbox = Sandbox::new(SandboxArgs::default().resolve()?);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let result = sandbox.execute(&ExecutionRequest::new("print(6 * 7)"), &cancel).await?;
//! assert_eq!(result.stdout, "42\n");
//! # Ok(()) }
//! ```

pub mod auth;
pub mod base_image;
pub mod config;
pub mod docker;
pub mod doctor;
pub mod executor;
pub mod hint;
pub mod image;
pub mod labels;
pub mod mcp;
pub mod metrics;
pub mod packages;
pub mod private_dir;
pub mod sandbox;
pub mod saved;
pub mod serving;
pub mod settings;
pub mod ssh;
pub mod tasks;
pub mod transport;
