//! MCP over Streamable HTTP for a team: rmcp's `StreamableHttpService` at `/mcp` behind
//! bearer-token authentication, `Origin` and `Host` checks and a body limit, plus `/healthz`
//! (open) and `/metrics` (behind the token). Connections are accepted by [`super::listener`],
//! which bounds them before authentication.
//!
//! Every session gets its own `PythonExecutor` (its own log level) over the one shared
//! [`Sandbox`] and [`Environment`]: all clients share the concurrency limit, the queue and
//! the warm pool. Tokens are compared in constant time and never logged.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::intake::{
    BODY_TIMEOUT, Intake, MAX_REQUEST_VALUES, Refused, SMALL_BODY, check_values, request_id,
};
use crate::auth::{TokenOwner, Tokens, bearer, read_tokens};
use crate::image::Environment;
use crate::mcp::PythonExecutor;
use crate::sandbox::Sandbox;
use crate::settings::{ConnectionLimits, HttpSettings};
use crate::tasks::Background;

/// Binds the address the settings name, with an error that says what to change.
pub async fn bind(settings: &HttpSettings) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another address with --http (PYEXEC_HTTP)",
                settings.addr
            )
        })
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting and ends every
/// session.
pub async fn run(
    listener: tokio::net::TcpListener,
    settings: HttpSettings,
    sandbox: Arc<Sandbox>,
    environment: Arc<Environment>,
    background: &Background,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let router = router(&settings, &sandbox, &environment, &stop);
    if let (Some(tokens), Some(file)) = (settings.tokens.clone(), settings.tokens_file.clone()) {
        background.spawn(reload_on_sighup(tokens, file));
    }
    let addr = listener.local_addr()?;
    let limits = connection_limits(&settings);
    tracing::info!(
        %addr,
        auth = settings.tokens.is_some(),
        max_connections = limits.max_open,
        max_per_peer = limits.max_per_peer,
        "serving MCP on HTTP at /mcp"
    );
    super::listener::serve(
        listener,
        router,
        limits,
        sandbox.metrics().clone(),
        shutdown,
        move || stop.cancel(),
    )
    .await;
    Ok(())
}

/// The routes: `/mcp` (rmcp's service, one `PythonExecutor` per session) and `/metrics`
/// behind the token and the intake count, `/healthz` open.
fn router(
    settings: &HttpSettings,
    sandbox: &Arc<Sandbox>,
    environment: &Arc<Environment>,
    stop: &CancellationToken,
) -> axum::Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop.child_token())
        .with_max_request_body_bytes(settings.max_body)
        .with_allowed_hosts(settings.allowed_hosts.clone());
    config = if settings.allowed_origins.is_empty() {
        config.enforce_origin_validation()
    } else {
        config
            .with_allowed_origins(settings.allowed_origins.clone())
            .enforce_origin_validation()
    };
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(settings.session_idle);
    let service = {
        let (sandbox, environment) = (sandbox.clone(), environment.clone());
        StreamableHttpService::new(
            move || Ok(PythonExecutor::new(sandbox.clone(), environment.clone())),
            Arc::new(sessions),
            config,
        )
    };
    let auth = settings.tokens.clone();
    let intake = (
        Intake::for_bodies_up_to(settings.max_body),
        settings.max_body,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .route("/metrics", axum::routing::get(metrics))
        .layer(axum::middleware::from_fn_with_state(intake, bounded_intake))
        .layer(axum::middleware::from_fn_with_state(auth, require_token))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(sandbox.clone())
}

/// The connection caps, lowered (and said so) to fit the open-files limit.
fn connection_limits(settings: &HttpSettings) -> ConnectionLimits {
    let open_files = super::listener::raise_open_files_limit();
    let limits = settings.connections.fitted_to(open_files);
    if limits.max_open < settings.connections.max_open {
        tracing::warn!(
            wanted = settings.connections.max_open,
            allowed = limits.max_open,
            open_files,
            "--http-max-connections lowered to fit the open-files limit (raise it with ulimit -n)"
        );
    }
    limits
}

/// 401 with `WWW-Authenticate: Bearer` unless the request carries an accepted token.
async fn require_token(
    State(tokens): State<Option<Arc<RwLock<Tokens>>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = tokens else {
        return next.run(request).await;
    };
    let presented = bearer(request.headers());
    let grants = presented.and_then(|p| tokens.read().unwrap_or_else(|e| e.into_inner()).grants(p));
    let owner = presented
        .zip(grants)
        .map(|(presented, grants)| TokenOwner::of(presented, grants));
    let mut request = request;
    if let Some(owner) = owner {
        request.extensions_mut().insert(owner);
    }
    if grants.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Reads a POST body within [`BODY_TIMEOUT`]: one declared larger than [`SMALL_BODY`] (or
/// of undeclared length) first waits for its share of the large-body budget (its token's part
/// of it at most), which it keeps until rmcp has taken the message; refuses one over
/// `max_body` (413) or with more values than a request may hold (a JSON-RPC error, 400). Only
/// so many large bodies are parsed at once, and no token's slow bodies stall another token.
async fn bounded_intake(
    State((intake, max_body)): State<(Intake, usize)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || too_large(max_body);
    if let Some(size) = declared.filter(|&size| size > max_body) {
        // Read and drop what the client sends (up to a few times the limit, for a few
        // seconds): a client that writes its whole body before it reads the answer (urllib)
        // would otherwise see a broken pipe instead of the 413. Nothing is kept.
        if size <= 4 * max_body {
            drain(request.into_body()).await;
        }
        return too_large();
    }
    let owner = request
        .extensions()
        .get::<TokenOwner>()
        .map_or_else(String::new, |owner| owner.0.clone());
    let (parts, body) = request.into_parts();
    let reading = async {
        let share = match declared {
            Some(size) if size <= SMALL_BODY => None,
            size => Some(intake.share(&owner, size.unwrap_or(max_body)).await),
        };
        let bytes = axum::body::to_bytes(body, max_body).await;
        (share, bytes)
    };
    let (share, bytes) = match tokio::time::timeout(BODY_TIMEOUT, reading).await {
        Ok((share, Ok(bytes))) => (share, bytes),
        Ok((_, Err(_))) => return too_large(),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s\n",
                    BODY_TIMEOUT.as_secs()
                ),
            )
                .into_response();
        }
    };
    if let Err(refused @ Refused::TooManyValues) = check_values(&bytes, MAX_REQUEST_VALUES) {
        return too_many_values(&bytes, &refused);
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    drop(share);
    response
}

/// 413: the body is over `max_body`.
fn too_large(max_body: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over {max_body} bytes (twice --max-input, plus framing)\n"),
    )
        .into_response()
}

/// Reads and drops a body, for 5 s at most.
async fn drain(body: axum::body::Body) {
    use futures::StreamExt;
    let mut body = body.into_data_stream();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}

/// 400 with a JSON-RPC error naming the request's id: more values than a request may hold.
fn too_many_values(bytes: &[u8], refused: &Refused) -> Response {
    let id = request_id(&bytes[..bytes.len().min(64 << 10)]);
    tracing::warn!(?id, "{refused}");
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32600, "message": refused.to_string()},
    });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

/// 200 when Docker answers and the image exists; 503 with the reason otherwise.
async fn healthz(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let checked = async {
        let docker = sandbox.docker().await.map_err(|e| e.to_string())?;
        docker
            .inspect_image(&sandbox.config().image)
            .await
            .map_err(|_| {
                format!(
                    "image {} not found: run `mcp-python-executor image build` (or make image)",
                    sandbox.config().image
                )
            })?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), checked).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", why.lines().next().unwrap_or_default()),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Docker did not answer within 5 s\n",
        )
            .into_response(),
    }
}

/// The counters and gauges in the Prometheus text format (behind the token).
async fn metrics(State(sandbox): State<Arc<Sandbox>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sandbox.metrics().render(&sandbox.gauges()),
    )
        .into_response()
}

/// Rereads the tokens file on SIGHUP; a file that fails to parse keeps the old tokens.
async fn reload_on_sighup(tokens: Arc<RwLock<Tokens>>, file: PathBuf) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match read_tokens(&file) {
            Ok(read) if !read.is_empty() => {
                let count = read.len();
                *tokens.write().unwrap_or_else(|e| e.into_inner()) = read;
                tracing::info!(tokens = count, "tokens reloaded");
            }
            Ok(_) => tracing::warn!("the tokens file is empty; keeping the tokens in use"),
            Err(error) => tracing::warn!(%error, "keeping the tokens in use"),
        }
    }
}
