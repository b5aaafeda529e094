//! The `mcp-python-executor` binary: parses the command line and wires the parts together.
//! With no subcommand it serves MCP on stdio, so a client config needs only the binary's path.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use mcp_python_executor::config::{EnvironmentArgs, HttpArgs, ImageBuildArgs, SandboxArgs};
use mcp_python_executor::image::Environment;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use mcp_python_executor::serving;

/// Run Python safely for AI assistants: every call in its own short-lived, hardened Docker
/// container (no network, read-only root, non-root user, memory/CPU/process/time limits).
///
/// With no subcommand the server speaks MCP on stdio; for Claude Desktop add
/// {"mcpServers": {"python": {"command": "/abs/path/mcp-python-executor"}}}
/// to claude_desktop_config.json. Build the image first: `mcp-python-executor image build`.
/// With --http it serves MCP over Streamable HTTP at /mcp for several clients instead
/// (bearer tokens from PYEXEC_HTTP_TOKEN or --http-tokens; see the README).
/// The engine is the one DOCKER_HOST names, as for the Docker CLI (DOCKER_TLS_VERIFY and
/// DOCKER_CERT_PATH for tcp://; ssh://USER@HOST; Podman's socket works too).
/// Every option can also be set with the environment variable shown; logs go to stderr,
/// level from RUST_LOG (e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "mcp-python-executor", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    environment: EnvironmentArgs,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP on stdio (the default)
    Serve,
    /// Run a Python file once in the sandbox, print its output, exit with its exit code
    /// (125 when the tool itself failed: Docker, the image, the request)
    Exec {
        /// The file to run; `-` or nothing reads the code from stdin
        file: Option<PathBuf>,
        /// A line of the program's stdin (repeat for more lines)
        #[arg(long = "input", value_name = "LINE")]
        input: Vec<String>,
    },
    /// Manage the packages baked into the execution environment
    #[command(subcommand)]
    Packages(PackagesCommand),
    /// Check what this host gives the sandbox (Docker, runtime, seccomp, image, leftovers)
    Doctor,
    /// Build the sandbox image in the engine DOCKER_HOST names
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build --image from the recipe in this binary, unless it is up to date: on the registry's
    /// Python image when the engine has or can pull it, else on a Debian root filesystem made
    /// by debootstrap (or given with --rootfs) and imported through the engine's API
    Build(ImageBuildArgs),
}

/// Exit status of `exec` when the tool itself failed (Docker, the image, the request), as
/// `docker run` does; any other status is the program's own.
const TOOL_FAILED: u8 = 125;

#[derive(Debug, Subcommand)]
enum PackagesCommand {
    /// List installed packages with versions
    List,
    /// Install packages (PEP 508 specs such as numpy or "pandas==2.*") as a new layer
    Install {
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// Forget every installed package and go back to the base image
    Reset,
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
    let command = cli.command.unwrap_or(Command::Serve);
    let failed = if matches!(command, Command::Exec { .. }) {
        ExitCode::from(TOOL_FAILED)
    } else {
        ExitCode::FAILURE
    };
    let outcome = runtime.block_on(async {
        let sandbox_config = cli.sandbox.resolve()?;
        let http = cli.http.resolve(sandbox_config.limits.max_input_bytes)?;
        let environment_config = cli.environment.resolve()?;
        match &command {
            Command::Doctor => return doctor(&sandbox_config, &environment_config).await,
            Command::Image(ImageCommand::Build(args)) => {
                return image_build(args.resolve(&sandbox_config.image)?).await;
            }
            _ => {}
        }
        let sandbox = Arc::new(Sandbox::new(sandbox_config));
        let environment = Arc::new(Environment::new(sandbox.clone(), environment_config));
        match command {
            Command::Serve => match http {
                Some(settings) => serve_http(settings, sandbox, environment).await,
                None => serve(sandbox, environment).await,
            },
            Command::Exec { file, input } => exec(sandbox, environment, file, input).await,
            Command::Packages(command) => packages(environment, command).await,
            Command::Doctor | Command::Image(_) => unreachable!("handled above"),
        }
    });
    // The stdin reader is a blocking read that only the client can end: do not wait for it
    // (a SIGTERM with the client's pipe still open must still exit). Containers are already
    // removed by the time `block_on` returns.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            failed
        }
    }
}

/// Prints an error once: what failed (its causes joined, each said once), then every hint
/// once, on its own line.
fn report(error: &anyhow::Error) {
    eprintln!("{}", mcp_python_executor::hint::Report::of_error(error));
}

/// Builds the sandbox image in the engine `DOCKER_HOST` names; progress goes to stderr.
async fn image_build(plan: mcp_python_executor::base_image::BuildPlan) -> anyhow::Result<ExitCode> {
    use mcp_python_executor::base_image::{Built, build};
    let docker = mcp_python_executor::engine::connect().await?;
    let say = |line: &str| eprintln!("image: {line}");
    match build(&docker, &plan, &say).await? {
        Built::UpToDate => say(&format!("{} is up to date (--force rebuilds it)", plan.tag)),
        Built::On(base) => say(&format!("built {} on {base}", plan.tag)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the host check and prints it; fails when a check failed.
async fn doctor(
    sandbox: &mcp_python_executor::config::SandboxConfig,
    environment: &mcp_python_executor::config::EnvironmentConfig,
) -> anyhow::Result<ExitCode> {
    use mcp_python_executor::doctor::{Verdict, assess, gather, render};
    let findings = assess(&gather(sandbox, environment).await);
    print!("{}", render(&findings));
    let failed = findings.iter().any(|f| f.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Serves MCP on stdio until the client leaves or a signal arrives.
async fn serve(sandbox: Arc<Sandbox>, environment: Arc<Environment>) -> anyhow::Result<ExitCode> {
    serving::stdio(sandbox, environment, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves MCP over HTTP until SIGINT or SIGTERM.
async fn serve_http(
    settings: mcp_python_executor::settings::HttpSettings,
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
) -> anyhow::Result<ExitCode> {
    let listener = mcp_python_executor::transport::http::bind(&settings).await?;
    serving::http(listener, settings, sandbox, environment, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one program from a file or stdin and mirrors its output and exit code.
async fn exec(
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
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
    // Like serve: reap what a crashed server left, check the image, learn the environment.
    tracing::debug!(instance = sandbox.instance(), "running one program");
    sandbox.see_liveness(&environment.config().state_dir);
    sandbox.prepare().await?;
    environment.ensure_loaded().await?;
    let request = ExecutionRequest::new(code).with_input(input);
    let result = sandbox.execute(&request, &cancel).await;
    // The container's removal finishes after the result; wait for it before exiting.
    sandbox.shutdown(serving::SHUTDOWN_GRACE).await;
    let result = result?;
    let status = ExitCode::from(result.exit_code.clamp(0, 255) as u8);
    // A reader that went away (`| head`) is no error: stop quietly with the program's status.
    let shown = std::io::stdout()
        .write_all(result.stdout.as_bytes())
        .and_then(|()| std::io::stdout().flush())
        .and_then(|()| std::io::stderr().write_all(result.stderr.as_bytes()));
    match shown {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(status),
        other => other?,
    }
    if result.timed_out {
        eprintln!(
            "[timed out after {} ms: the program was killed]",
            result.duration_ms
        );
    } else if result.oom_killed {
        eprintln!("[killed: the program ran out of memory]");
    }
    if let Some(line) = result
        .egress
        .as_deref()
        .and_then(mcp_python_executor::egress::summary)
    {
        eprintln!("[{line}]");
    }
    Ok(status)
}

/// The operator's view of the package environment.
async fn packages(
    environment: Arc<Environment>,
    command: PackagesCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PackagesCommand::List => {
            let state = environment.ensure_loaded().await?;
            if state.packages.is_empty() {
                eprintln!("no packages installed beyond the standard library");
            }
            for (name, version) in state.packages.values() {
                println!("{name}=={version}");
            }
        }
        PackagesCommand::Install { specs } => {
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                on_signal.cancel();
            });
            let show = |line: &str| eprintln!("  {line}");
            let report = environment.install(&specs, &show, &cancel).await?;
            println!("installed: {}", report.installed.join(" "));
            println!("already present: {}", report.already_present.join(" "));
            println!("took {:.1} s", report.duration_ms as f64 / 1000.0);
        }
        PackagesCommand::Reset => {
            environment.reset().await?;
            println!("environment reset to the base image");
        }
    }
    Ok(ExitCode::SUCCESS)
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
