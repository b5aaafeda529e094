//! The MCP face of the server: tool argument structs, tool descriptions, and the mapping of
//! sandbox results to MCP content.
//!
//! This layer is thin on purpose: it validates arguments, hands an [`ExecutionRequest`] to the
//! [`Sandbox`] or package specs to the [`Environment`], and renders what comes back (pip's
//! output becomes progress notifications). No Docker types appear here.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::SandboxConfig;
use crate::docker::DockerError;
use crate::image::{EnvState, Environment, InstallError, InstallReport};
use crate::progress::Forwarder;
use crate::sandbox::{ExecutionRequest, ExecutionResult, Sandbox, SandboxError};

/// Arguments of `execute_python`, named exactly as the original TypeScript server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecutePythonArgs {
    /// The Python source code to run as the main program.
    pub code: String,
    /// Lines given to the program as standard input (each followed by a newline), then EOF.
    #[serde(rename = "inputData", default)]
    pub input_data: Option<Vec<String>>,
}

/// Arguments of `install_packages`, named exactly as the original server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct InstallPackagesArgs {
    /// Package specs from the package index: a name with optional extras and version
    /// specifiers, e.g. "numpy", "pandas==2.*", "requests[socks]>=2.31".
    pub packages: Vec<String>,
}

/// The structured answer of `list_packages`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageList {
    /// Every installed distribution, sorted by name.
    pub packages: Vec<InstalledPackage>,
}

/// One installed distribution.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
}

/// The structured part of an `execute_python` answer (stdout and stderr are text content).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecutionStatus {
    /// The program's exit status; 137 when it was killed.
    pub exit_code: i64,
    /// True when the program ran past the time limit and was killed.
    pub timed_out: bool,
    /// True when the program was killed for using more memory than allowed.
    pub oom_killed: bool,
    /// True when output past the per-stream limit was dropped.
    pub truncated: bool,
    /// Run time in milliseconds.
    pub duration_ms: u64,
}

/// The MCP server: one [`Sandbox`] and its package [`Environment`] behind the tools.
#[derive(Clone)]
pub struct PythonExecutor {
    /// Runs the code.
    sandbox: Arc<Sandbox>,
    /// Knows and changes what packages executions can import.
    environment: Arc<Environment>,
    /// The tools, with descriptions that state the limits in force.
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl PythonExecutor {
    pub fn new(sandbox: Arc<Sandbox>, environment: Arc<Environment>) -> Self {
        let mut tool_router = Self::tool_router();
        if let Some(route) = tool_router.map.get_mut("execute_python") {
            route.attr.description = Some(execute_description(sandbox.config()).into());
            route.attr.output_schema = Some(Arc::new(
                serde_json::to_value(schemars::schema_for!(ExecutionStatus))
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default(),
            ));
        }
        Self {
            sandbox,
            environment,
            tool_router,
        }
    }

    /// Run Python code in a fresh, isolated container (description replaced at start).
    #[tool(name = "execute_python")]
    async fn execute_python(
        &self,
        Parameters(args): Parameters<ExecutePythonArgs>,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let request = ExecutionRequest {
            code: args.code,
            input_lines: args.input_data.unwrap_or_default(),
        };
        // The first call learns which package environment is current (one inspect).
        if let Err(error) = self.environment.ensure_loaded().await {
            tracing::debug!(%error, "package environment not loaded");
        }
        let mut outcome = self.sandbox.execute(&request, &cancel).await;
        // Another server sharing the tag replaced the environment and removed the image this
        // one still pointed at: nothing ran (the create failed), so follow the tag and retry.
        if let Err(SandboxError::Docker(DockerError::ImageMissing { image })) = &outcome
            && **image != *self.sandbox.config().image
            && self.environment.follow_tag().await.unwrap_or(false)
        {
            outcome = self.sandbox.execute(&request, &cancel).await;
        }
        match outcome {
            Ok(result) => Ok(render(result)),
            Err(error @ SandboxError::RequestTooLarge { .. }) => {
                Err(ErrorData::invalid_params(error.to_string(), None))
            }
            Err(error) => {
                tracing::warn!(%error, "execute_python failed");
                Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]))
            }
        }
    }

    /// Install Python packages from the package index so later execute_python calls can import
    /// them. Specs are names with optional extras and versions ("numpy", "pandas==2.*");
    /// pip options, URLs, paths and markers are refused. Installs are kept across restarts.
    #[tool(name = "install_packages")]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackagesArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let progress = PipProgress::new(meta, peer);
        let on_line = |line: &str| progress.forwarder.line(line);
        let installed = self
            .environment
            .install(&args.packages, &on_line, &cancel)
            .await;
        progress.finish().await;
        match installed {
            Ok(report) => Ok(render_install(&report)),
            Err(InstallError::Spec(error)) => {
                Err(ErrorData::invalid_params(error.to_string(), None))
            }
            Err(error) => {
                tracing::warn!(%error, "install_packages failed");
                Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]))
            }
        }
    }

    /// List the packages installed in the environment execute_python runs in, with versions.
    #[tool(name = "list_packages")]
    async fn list_packages(&self) -> Result<CallToolResult, ErrorData> {
        match self.environment.ensure_loaded().await {
            Ok(state) => Ok(render_package_list(&state)),
            Err(error) => Ok(CallToolResult::error(vec![ContentBlock::text(
                error.to_string(),
            )])),
        }
    }
}

/// Turns pip's output into MCP progress notifications when the client asked for progress (a
/// token), and into log notifications otherwise, so a desktop client sees the install is
/// alive. Lines are capped and coalesced by a [`Forwarder`]; the count of lines not shown is
/// sent last.
struct PipProgress {
    /// Where lines go: one forwarding task, a bounded queue.
    forwarder: Forwarder,
    /// Sends the closing count.
    send: Notifier,
}

/// Sends one message as a progress or log notification.
#[derive(Clone)]
struct Notifier {
    /// The client's progress token, if it sent one.
    token: Option<rmcp::model::ProgressToken>,
    /// Where notifications go.
    peer: Peer<RoleServer>,
    /// Messages sent so far: the progress value.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Notifier {
    // MCP logging is deprecated by SEP-2577, but clients on earlier protocol versions (Claude
    // Desktop among them) still use it, and without a progress token it is the only sign of life.
    #[allow(deprecated)]
    async fn send(&self, message: String) {
        let count = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match self.token.clone() {
            Some(token) => {
                let param =
                    ProgressNotificationParam::new(token, count as f64).with_message(message);
                let _ = self.peer.notify_progress(param).await;
            }
            None => {
                let param =
                    LoggingMessageNotificationParam::new(LoggingLevel::Info, message.into())
                        .with_logger("pip");
                let _ = self.peer.notify_logging_message(param).await;
            }
        }
    }
}

impl PipProgress {
    fn new(meta: RequestMetaObject, peer: Peer<RoleServer>) -> Self {
        let send = Notifier {
            token: meta.get_progress_token(),
            peer,
            sent: Arc::default(),
        };
        let forwarder = Forwarder::start({
            let send = send.clone();
            move |batch| {
                let send = send.clone();
                async move { send.send(batch).await }
            }
        });
        Self { forwarder, send }
    }

    /// Sends what is still queued, then how many lines were left out.
    async fn finish(self) {
        let skipped = self.forwarder.finish().await;
        if skipped > 0 {
            self.send
                .send(format!("({skipped} more lines of pip output not shown)"))
                .await;
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PythonExecutor {
    #[allow(deprecated)] // enable_logging: see PipProgress::line
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Runs Python code in a fresh, isolated Docker container per call \
                 (no network, no state kept between calls).",
        )
    }
}

/// The tool description: what is available and the limits in force.
pub fn execute_description(config: &SandboxConfig) -> String {
    let limits = &config.limits;
    let network = if config.network == "none" {
        "There is no network access.".to_string()
    } else {
        format!("Network: Docker network `{}`.", config.network)
    };
    format!(
        "Run Python 3 code in a fresh, isolated container and return its stdout, stderr and \
         exit code. Each call is a new interpreter: no variables, files or imports are kept \
         between calls. `inputData` lines are the program's stdin. The standard library and \
         packages installed with install_packages are available. {network} Only /tmp is \
         writable ({tmp} MiB). Limits per call: {timeout} s wall clock, {memory} MiB memory, \
         {cpus} CPU, {pids} processes, {output} KiB of output per stream (the rest is dropped). \
         Print results you want to see.",
        tmp = limits.tmp_bytes >> 20,
        timeout = limits.timeout.as_secs(),
        memory = limits.memory_bytes >> 20,
        cpus = limits.nano_cpus as f64 / 1e9,
        pids = limits.pids,
        output = limits.max_output_bytes >> 10,
    )
}

/// Renders an install report as text plus the structured report.
pub fn render_install(report: &InstallReport) -> CallToolResult {
    let mut lines = Vec::new();
    if report.installed.is_empty() {
        lines.push("Nothing new to install.".to_string());
    } else {
        lines.push(format!("Installed: {}", report.installed.join(", ")));
    }
    if !report.already_present.is_empty() {
        lines.push(format!(
            "Already present: {}",
            report.already_present.join(", ")
        ));
    }
    if report.rebuilt {
        lines.push("The environment was rebuilt from the base in one layer.".to_string());
    }
    lines.push(format!("Took {:.1} s.", report.duration_ms as f64 / 1000.0));
    let mut answer = CallToolResult::success(vec![ContentBlock::text(lines.join("\n"))]);
    answer.structured_content = serde_json::to_value(report).ok();
    answer
}

/// Renders the installed distributions as `name==version` lines plus a structured list.
pub fn render_package_list(state: &EnvState) -> CallToolResult {
    let packages: Vec<InstalledPackage> = state
        .packages
        .values()
        .map(|(name, version)| InstalledPackage {
            name: name.clone(),
            version: version.clone(),
        })
        .collect();
    let text = if packages.is_empty() {
        "No packages installed beyond the Python standard library.".to_string()
    } else {
        packages
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut answer = CallToolResult::success(vec![ContentBlock::text(text)]);
    answer.structured_content = serde_json::to_value(PackageList { packages }).ok();
    answer
}

/// Renders an execution as labelled text blocks plus the structured status fields.
pub fn render(result: ExecutionResult) -> CallToolResult {
    let failed = result.failed();
    let mut content = Vec::new();
    if !result.stdout.is_empty() || result.stderr.is_empty() {
        let stdout = if result.stdout.is_empty() {
            "(no output)"
        } else {
            &result.stdout
        };
        content.push(ContentBlock::text(format!("stdout:\n{stdout}")));
    }
    if !result.stderr.is_empty() {
        content.push(ContentBlock::text(format!("stderr:\n{}", result.stderr)));
    }
    if failed {
        content.push(ContentBlock::text(status_line(&result)));
    }
    let status = ExecutionStatus {
        exit_code: result.exit_code,
        timed_out: result.timed_out,
        oom_killed: result.oom_killed,
        truncated: result.truncated,
        duration_ms: result.duration_ms,
    };
    let mut answer = if failed {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    answer.structured_content = serde_json::to_value(status).ok();
    answer
}

fn status_line(result: &ExecutionResult) -> String {
    if result.timed_out {
        format!(
            "timed out after {} ms: the program was killed",
            result.duration_ms
        )
    } else if result.oom_killed {
        "killed: the program ran out of memory".to_string()
    } else {
        format!("exit code {}", result.exit_code)
    }
}
