//! The `mcp-python-executor` binary: parses the command line and wires the parts together.
//! With no subcommand it serves MCP on stdio, so a client config needs only the binary's path.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use mcp_python_executor::config::SandboxArgs;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use mcp_python_executor::server::PythonExecutor;

/// How long shutdown waits for running calls' containers to be removed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Run Python safely for AI assistants: every call in its own short-lived, hardened Docker
/// container (no network, read-only root, non-root user, memory/CPU/process/time limits).
///
/// With no subcommand the server speaks MCP on stdio; for Claude Desktop add
/// {"mcpServers": {"python": {"command": "/abs/path/mcp-python-executor"}}}
/// to claude_desktop_config.json. Build the image first with `make image`.
/// Every option can also be set with the environment variable shown; logs go to stderr,
/// level from RUST_LOG (e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "mcp-python-executor", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP on stdio (the default)
    Serve,
    /// Run a Python file once in the sandbox, print its output, exit with its exit code
    Exec {
        /// The file to run; `-` or nothing reads the code from stdin
        file: Option<PathBuf>,
        /// A line of the program's stdin (repeat for more lines)
        #[arg(long = "input", value_name = "LINE")]
        input: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mcp_python_executor=info,warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let config = cli.sandbox.resolve()?;
        let sandbox = Arc::new(Sandbox::new(config));
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(sandbox).await,
            Command::Exec { file, input } => exec(sandbox, file, input).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves MCP on stdio until the client disconnects or a signal arrives, then removes every
/// container still running.
async fn serve(sandbox: Arc<Sandbox>) -> anyhow::Result<ExitCode> {
    let preparing = sandbox.clone();
    tokio::spawn(async move {
        if let Err(error) = preparing.prepare().await {
            tracing::error!("{error}");
        }
    });
    tracing::info!(instance = sandbox.instance(), "serving MCP on stdio");
    let service = PythonExecutor::new(sandbox.clone())
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialization failed")?;
    tokio::select! {
        result = service.waiting() => { result.context("MCP session failed")?; }
        _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
    }
    sandbox.shutdown(SHUTDOWN_GRACE).await;
    Ok(ExitCode::SUCCESS)
}

/// Runs one program from a file or stdin and mirrors its output and exit code.
async fn exec(
    sandbox: Arc<Sandbox>,
    file: Option<PathBuf>,
    input: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let code = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut code = String::new();
            std::io::stdin()
                .read_to_string(&mut code)
                .context("cannot read code from stdin")?;
            code
        }
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    let request = ExecutionRequest::new(code).with_input(input);
    let result = sandbox.execute(&request, &cancel).await?;
    std::io::stdout().write_all(result.stdout.as_bytes())?;
    std::io::stderr().write_all(result.stderr.as_bytes())?;
    if result.timed_out {
        eprintln!(
            "[timed out after {} ms: the program was killed]",
            result.duration_ms
        );
    } else if result.oom_killed {
        eprintln!("[killed: the program ran out of memory]");
    }
    Ok(ExitCode::from(result.exit_code.clamp(0, 255) as u8))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
