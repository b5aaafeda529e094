//! Serving: the composition root of a serving server, for either transport. The start-up
//! checks, the warm pool, the reaper, following the environment tag and the preinstall run
//! beside the transport, every background task on one [`Background`]; stdio serves one
//! client until it leaves, HTTP many until `shutdown`. The shutdown order: the transport
//! stops, the background tasks end, then the sandbox drains, so every container is removed
//! and no task of ours runs when the function returns. `main.rs` only picks one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;

use crate::image::Environment;
use crate::mcp::PythonExecutor;
use crate::sandbox::Sandbox;
use crate::tasks::Background;

/// How long shutdown waits for running calls' containers to be removed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How often a serving server re-reads the environment tag (another server may move it).
const FOLLOW_EVERY: Duration = Duration::from_secs(10);

/// What a serving server runs beside its transport, on `background`: the start-up checks,
/// the pool, the reaper, following the environment tag, and the preinstall (which executions
/// wait for).
pub fn start_background(
    sandbox: &Arc<Sandbox>,
    environment: &Arc<Environment>,
    background: &Background,
) {
    // Executions that arrive before the preinstall is done wait for it.
    environment.expect_preinstall();
    sandbox.claim_liveness(&environment.config().state_dir);
    let (preparing, installing) = (sandbox.clone(), environment.clone());
    let (following, tasks) = (environment.clone(), background.clone());
    background.spawn(async move {
        if let Err(error) = preparing.prepare().await {
            tracing::error!("{error}");
        }
        // Warm containers start from the current environment, so load it first; the pool
        // itself retries while Docker or the image is missing.
        if let Err(error) = installing.ensure_loaded().await {
            tracing::warn!("{error}");
        }
        preparing.start_pool();
        preparing.start_reaper();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                if let Err(error) = following.follow_tag().await {
                    tracing::debug!(%error, "could not read the environment tag");
                }
            }
        });
        match installing.preinstall().await {
            Ok(Some(report)) if !report.installed.is_empty() => {
                tracing::info!(installed = ?report.installed, "PREINSTALLED_PACKAGES installed");
            }
            Ok(_) => {}
            Err(error) => tracing::error!("PREINSTALLED_PACKAGES: {error}"),
        }
    });
}

/// Serves MCP on the process's stdin and stdout: what a desktop client starts.
pub async fn stdio(
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!(instance = sandbox.instance(), "serving MCP on stdio");
    pipes(
        tokio::io::stdin(),
        tokio::io::stdout(),
        sandbox,
        environment,
        shutdown,
    )
    .await
}

/// Serves one MCP client on a pair of byte streams (newline-delimited JSON-RPC, through the
/// stdio gateway) until the client leaves or `shutdown` resolves, then removes every
/// container still running. `stdio` is this on the process's own pipes; tests use it on an
/// in-memory pipe.
pub async fn pipes<R, W>(
    input: R,
    output: W,
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let background = Background::new();
    start_background(&sandbox, &environment, &background);
    let gateway = crate::transport::stdio::gateway(input, output);
    let session = async {
        let service = PythonExecutor::new(sandbox.clone(), environment.clone())
            .serve(gateway.transport)
            .await
            .context("MCP initialization failed")?;
        service.waiting().await.context("MCP session failed")?;
        // The session is over; let its last answers reach the client.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, gateway.finished).await;
        anyhow::Ok(())
    };
    // However the session ends (even a client that leaves before initializing), the pool is
    // drained and every container removed before the process exits.
    let ended = tokio::select! {
        ended = session => ended,
        () = shutdown => {
            tracing::info!("signal received, shutting down");
            Ok(())
        }
    };
    background.stop().await;
    environment.stop().await;
    sandbox.shutdown(SHUTDOWN_GRACE).await;
    ended
}

/// Serves MCP over Streamable HTTP on `listener` until `shutdown` resolves: stops accepting,
/// ends the sessions (their running calls are stopped and their containers removed), then
/// drains the sandbox. The caller binds the listener ([`crate::transport::http::bind`]), so a test can
/// take port 0 and learn the port.
pub async fn http(
    listener: tokio::net::TcpListener,
    settings: crate::settings::HttpSettings,
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let background = Background::new();
    start_background(&sandbox, &environment, &background);
    tracing::info!(instance = sandbox.instance(), "serving MCP on HTTP");
    let served = crate::transport::http::run(
        listener,
        settings,
        sandbox.clone(),
        environment.clone(),
        &background,
        async {
            shutdown.await;
            tracing::info!("signal received, shutting down");
        },
    )
    .await;
    background.stop().await;
    environment.stop().await;
    sandbox.shutdown(SHUTDOWN_GRACE).await;
    served
}
