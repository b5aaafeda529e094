//! mcp-python-executor: an MCP server that runs Python in short-lived, hardened Docker
//! containers, one fresh container per call.
//!
//! # Layout
//! Strict layers, each importing only those below it (`tests/layers.rs` checks it):
//! - [`config`]: every setting (flag, `PYEXEC_*` variable, default, range) and its validation,
//!   producing the [`settings`] types. Only `main.rs` uses it.
//! - [`serving`]: the composition root while serving: background tasks on one [`tasks`]
//!   tracker, the stdio and HTTP entry points, the shutdown order.
//! - [`transport`]: the stdio line gateway, Streamable HTTP (bearer tokens, Origin/Host,
//!   `/healthz`, `/metrics`), HTTP's listener, and the intake count both do before rmcp parses.
//! - [`mcp`]: the MCP tools, thin: arguments, descriptions, answers as MCP content (figures
//!   and files among them), and one notifier for live output and pip's output.
//! - [`executor`]: the policy of one call: the preinstall wait, plain or session, the retry
//!   when the environment image vanished, counting; installs' grants.
//! - [`image`]: the package environment: the current image, installs as checked, committed
//!   layers, the cross-process install lock and the removal of superseded layers.
//! - [`doctor`]: the host check behind `mcp-python-executor doctor` (with `--allow-host`, one
//!   real call that reaches its egress proxy).
//! - [`base_image`]: `image build`: the recipe sent through the engine's API, the offline
//!   root filesystem imported the same way.
//! - [`sandbox`]: one call's container: hardened create, attach, stream, wait, limits, remove;
//!   the guard that removes it on every path, the pool, sessions and the reaper; the runner's
//!   protocol; each container's egress socket, mounted (`--allow-host`).
//! - [`engine`]: the lazy daemon connection (local, TLS, or `ssh://` with one `ssh … docker
//!   system dial-stdio` per connection), the engine's kind, and Docker errors turned into
//!   next steps.
//! - Leaves: [`settings`] (validated settings), [`labels`] (every label), [`auth`] (tokens,
//!   grants, the owner of a request), [`hint`] (hints as data, an error printed once),
//!   [`tasks`] (background tasks ended together), [`packages`] (PEP 508 specs, pip's
//!   arguments), [`metrics`] (Prometheus text), [`private_dir`] (the state folder, this
//!   user's only), [`saved`] (`--output-dir`, private and bounded), [`egress`] (the allowlist,
//!   the address checks and one proxy per container behind a Unix socket, with its ledger).
//!
//! A call goes `transport` → `mcp` → `executor` → [`sandbox::Sandbox::execute`] → Docker, and
//! back as an [`sandbox::ExecutionResult`] that `mcp` renders. `main.rs` only parses the
//! command line and wires these together.
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
pub mod doctor;
pub mod egress;
pub mod engine;
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
pub mod tasks;
pub mod transport;
