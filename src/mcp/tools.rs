//! The MCP tools and the server handler: each tool method takes its arguments and request
//! context, hands the call to the [`Executor`], and renders what comes back. The doc comment
//! of a tool method is its description unless [`PythonExecutor::new`] replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use tokio_util::sync::CancellationToken;

use super::args::{CloseSessionArgs, ExecutePythonArgs, ExecutionStatus, InstallPackagesArgs};
use super::context::{DEFAULT_LOG_LEVEL, Notifier, caller, session_of, severity};
use super::describe::{create_session_description, execute_description};
use super::render::{self, error_text};
use super::{attachments, render::render_install};
use crate::executor::{Call, CallError, Executor, InstallRefusal};
use crate::image::{Environment, InstallError};
use crate::sandbox::{ExecutionRequest, Returned, Sandbox, SandboxError};
use crate::settings::OutputConfig;

/// The MCP server: the [`Executor`] over one [`Sandbox`] and its package [`Environment`]
/// behind the tools.
#[derive(Clone)]
pub struct PythonExecutor {
    /// Runs the calls.
    executor: Executor,
    /// The tools, with descriptions that state the limits in force.
    tool_router: ToolRouter<Self>,
    /// The least severe log notification the client wants (`logging/setLevel`).
    log_level: Arc<AtomicU8>,
}

#[tool_router]
impl PythonExecutor {
    pub fn new(sandbox: Arc<Sandbox>, environment: Arc<Environment>) -> Self {
        let executor = Executor::new(sandbox, environment);
        let config = executor.config();
        let mut tool_router = Self::tool_router();
        if let Some(route) = tool_router.map.get_mut("create_session") {
            route.attr.description = Some(create_session_description(config).into());
        }
        if config.sessions.max == 0 {
            tool_router.map.remove("create_session");
            tool_router.map.remove("close_session");
        }
        if !executor.installs() {
            tool_router.map.remove("install_packages");
        }
        if let Some(route) = tool_router.map.get_mut("execute_python") {
            route.attr.description = Some(execute_description(config).into());
            route.attr.output_schema = Some(Arc::new(
                serde_json::to_value(schemars::schema_for!(ExecutionStatus))
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default(),
            ));
        }
        Self {
            executor,
            tool_router,
            log_level: Arc::new(AtomicU8::new(severity(DEFAULT_LOG_LEVEL))),
        }
    }

    /// Where one call's notifications go (see [`Notifier::new`]).
    fn notifier(&self, meta: RequestMetaObject, peer: Peer<RoleServer>) -> Notifier {
        Notifier::new(meta, peer, self.log_level.clone())
    }

    /// Run Python code in a fresh, isolated container (description replaced at start).
    #[tool(name = "execute_python")]
    async fn execute_python(
        &self,
        Parameters(args): Parameters<ExecutePythonArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        extensions: Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let request = ExecutionRequest {
            code: args.code,
            stdin: args.input_data.0.bytes,
        };
        let owner = caller(&extensions).map(|owner| owner.0);
        let call = Call::new(request, args.session_id, owner, session_of(&extensions));
        let notifier = self.notifier(meta, peer);
        let ran = match self.executor.execute(call, &notifier, &cancel).await {
            Ok(ran) => ran,
            Err(CallError::Busy(busy)) => return Ok(error_text(busy.to_string())),
            Err(CallError::CancelledWaiting) => return Ok(error_text(render::CANCELLED_WAITING)),
            Err(CallError::Failed(error @ SandboxError::RequestTooLarge { .. })) => {
                return Err(ErrorData::invalid_params(error.to_string(), None));
            }
            Err(CallError::Failed(error)) => {
                tracing::warn!(%error, "execute_python failed");
                return Ok(error_text(error.to_string()));
            }
        };
        let mut result = ran.result;
        let outputs = self.executor.config().outputs.clone();
        let returned = std::mem::take(&mut result.returned);
        // The full (capped) output is saved only where there is a folder for it.
        let output = match outputs.output_dir {
            Some(_) => (result.stdout.to_string(), result.stderr.to_string()),
            None => Default::default(),
        };
        let config = self.executor.config();
        let mut answer = render::execution(result, ran.note, ran.session, config);
        if returned == Returned::default() && outputs.output_dir.is_none() {
            return Ok(answer);
        }
        answer
            .content
            .extend(returned_content(returned, output, outputs).await);
        Ok(answer)
    }

    /// Open a session: an interpreter that keeps its state between execute_python calls
    /// (description replaced at start with the limits in force).
    #[tool(name = "create_session")]
    async fn create_session(
        &self,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        extensions: Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let notifier = self.notifier(meta, peer);
        let owner = caller(&extensions).map(|owner| owner.0);
        let opened = self
            .executor
            .create_session(owner.as_deref(), &notifier, &cancel)
            .await;
        match opened {
            Ok(opened) => {
                tracing::info!(session = %session_of(&extensions), "create_session");
                let config = self.executor.config();
                Ok(render::session_opened(&opened.info, opened.note, config))
            }
            Err(CallError::CancelledWaiting) => Ok(error_text(render::CANCELLED_OPENING)),
            Err(CallError::Busy(error) | CallError::Failed(error)) => {
                tracing::warn!(%error, "create_session failed");
                Ok(error_text(error.to_string()))
            }
        }
    }

    /// End a session at once: its interpreter, variables and /tmp files are removed with its
    /// container. Sessions also close by themselves when idle or old.
    #[tool(name = "close_session")]
    async fn close_session(
        &self,
        Parameters(args): Parameters<CloseSessionArgs>,
        extensions: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = caller(&extensions).map(|owner| owner.0);
        match self
            .executor
            .close_session(&args.session_id, owner.as_deref())
        {
            Ok(()) => Ok(CallToolResult::success(vec![ContentBlock::text(
                "The session is closed: its container, variables and files are gone.",
            )])),
            Err(error) => Ok(error_text(error.to_string())),
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
        extensions: Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let grants = caller(&extensions).map(|owner| owner.1);
        let notifier = self.notifier(meta, peer);
        let installed = self
            .executor
            .install(&args.packages, grants, &notifier, &cancel)
            .await;
        match installed {
            Ok(report) => Ok(render_install(&report)),
            Err(InstallRefusal::NotGranted) => Ok(error_text(render::INSTALL_NOT_GRANTED)),
            Err(InstallRefusal::Failed(InstallError::Spec(error))) => {
                Err(ErrorData::invalid_params(error.to_string(), None))
            }
            Err(InstallRefusal::Failed(error)) => {
                tracing::warn!(%error, "install_packages failed");
                Ok(error_text(error.to_string()))
            }
        }
    }

    /// List the packages installed in the environment execute_python runs in, with versions.
    #[tool(name = "list_packages")]
    async fn list_packages(&self) -> Result<CallToolResult, ErrorData> {
        match self.executor.packages().await {
            Ok(packages) => Ok(render::packages(&packages)),
            Err(error) => Ok(error_text(error.to_string())),
        }
    }
}

/// What a call handed back, as content (on a blocking thread): the figures and files
/// rendered, then, with `--output-dir`, the files and output saved and linked.
async fn returned_content(
    returned: Returned,
    output: (String, String),
    outputs: OutputConfig,
) -> Vec<ContentBlock> {
    tokio::task::spawn_blocking(move || {
        let Returned { files, left_out } = returned;
        let mut content = attachments::render(&files, left_out, &outputs);
        content.extend(attachments::save_links(
            &files,
            (&output.0, &output.1),
            &outputs,
        ));
        content
    })
    .await
    .unwrap_or_else(|error| {
        vec![ContentBlock::text(format!(
            "note: the figures and files could not be returned: {error}"
        ))]
    })
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PythonExecutor {
    /// The router's dispatch, except that install_packages on a server without installs (it
    /// is not listed there) is answered with the reason rather than as an unknown tool.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        if request.name == "install_packages" && !self.executor.installs() {
            return Ok(error_text(render::INSTALLS_OFF).into());
        }
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    /// `logging/setLevel`: later log notifications below `level` are not sent. (The MCP
    /// Inspector sends it at connect, since the server declares logging.)
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: rmcp::service::RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_level
            .store(severity(request.level), Ordering::Relaxed);
        tracing::debug!(level = ?request.level, "client set the log level");
        Ok(())
    }

    #[allow(deprecated)] // enable_logging: see Notifier::send
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
            "Runs Python code in a fresh, isolated Docker container per call (no network, no \
             state kept between calls), or, in a session from create_session, in one \
             interpreter that keeps its state between calls.",
        )
    }
}
