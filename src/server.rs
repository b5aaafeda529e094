//! The MCP face of the server: tool argument structs, tool descriptions, and the mapping of
//! sandbox results to MCP content.
//!
//! This layer is thin on purpose: it validates arguments, hands an [`ExecutionRequest`] to the
//! [`Sandbox`], and renders the [`ExecutionResult`]. No Docker types appear here.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::SandboxConfig;
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

/// The MCP server: one [`Sandbox`] behind the tools.
#[derive(Clone)]
pub struct PythonExecutor {
    /// Runs the code.
    sandbox: Arc<Sandbox>,
    /// The tools, with descriptions that state the limits in force.
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl PythonExecutor {
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
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
        match self.sandbox.execute(&request, &cancel).await {
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
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PythonExecutor {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
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
