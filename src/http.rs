//! MCP over Streamable HTTP for a team: rmcp's `StreamableHttpService` at `/mcp` behind
//! bearer-token authentication, `Origin` and `Host` checks and a body limit, plus `/healthz`
//! (open) and `/metrics` (behind the token). Connections are accepted by [`crate::listener`],
//! which bounds them before authentication.
//!
//! Every session gets its own `PythonExecutor` (its own log level) over the one shared
//! [`Sandbox`] and [`Environment`]: all clients share the concurrency limit, the queue and
//! the warm pool. Tokens are compared in constant time and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::image::Environment;
use crate::intake::{
    BODY_TIMEOUT, Intake, MAX_REQUEST_VALUES, Refused, SMALL_BODY, check_values, request_id,
};
use crate::sandbox::Sandbox;
use crate::server::PythonExecutor;

/// Where `--http` binds when given without an address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8808";

/// The tokens that may call the server (empty only with `--http-insecure-no-auth`), each
/// with what it may do beyond running code.
#[derive(Default)]
pub struct Tokens(Vec<Token>);

/// One accepted token.
struct Token {
    secret: Vec<u8>,
    /// May call `install_packages`: the environment it changes is every token's.
    may_install: bool,
}

/// What a token may do beyond running code, once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// `install_packages`.
    pub install: bool,
}

/// The permission a tokens file line may give after its token.
const INSTALL_GRANT: &str = "install";

/// Shows how many tokens there are, never the tokens.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from a file: one per line, optionally followed by the permissions it has
    /// (`install`: it may call install_packages); blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let token = words.next().unwrap_or_default();
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "line {}: a token must be at least 16 characters with no spaces \
                     (e.g. `openssl rand -hex 32`)",
                    number + 1
                ));
            }
            let mut may_install = false;
            for word in words {
                if word != INSTALL_GRANT {
                    // The word is not echoed: a line with a stray space may hold a secret.
                    return Err(format!(
                        "line {}: after the token, the only permission a line may give is \
                         `{INSTALL_GRANT}` (it may call install_packages)",
                        number + 1
                    ));
                }
                may_install = true;
            }
            tokens.push(Token {
                secret: token.as_bytes().to_vec(),
                may_install,
            });
        }
        Ok(Self(tokens))
    }

    /// One token (`PYEXEC_HTTP_TOKEN`): one tenant, who may install.
    pub fn single(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.split_ascii_whitespace().count() != 1 {
            return Err("PYEXEC_HTTP_TOKEN must hold exactly one token".to_string());
        }
        let mut tokens = Self::parse(token)?;
        for token in &mut tokens.0 {
            token.may_install = true;
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens; every token is compared, in constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.grants(presented).is_some()
    }

    /// What `presented` may do, if it is one of the tokens; every token is compared, in
    /// constant time.
    pub fn grants(&self, presented: &[u8]) -> Option<Grants> {
        let mut found = subtle::Choice::from(0);
        let mut install = subtle::Choice::from(0);
        for token in &self.0 {
            let same = token.secret.as_slice().ct_eq(presented);
            found |= same;
            install |= same & subtle::Choice::from(u8::from(token.may_install));
        }
        bool::from(found).then(|| Grants {
            install: install.into(),
        })
    }
}

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
    pub connections: crate::listener::ConnectionLimits,
}

/// Reads a tokens file.
pub fn read_tokens(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "--http-tokens {}: {e}; give a file with one token per line",
            path.display()
        )
    })?;
    Tokens::parse(&text).map_err(|e| anyhow::anyhow!("--http-tokens {}: {e}", path.display()))
}

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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
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
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .route("/metrics", axum::routing::get(metrics))
        .layer(axum::middleware::from_fn_with_state(intake, bounded_intake))
        .layer(axum::middleware::from_fn_with_state(auth, require_token))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(sandbox.clone());
    if let (Some(tokens), Some(file)) = (settings.tokens.clone(), settings.tokens_file.clone()) {
        tokio::spawn(reload_on_sighup(tokens, file));
    }
    let addr = listener.local_addr()?;
    let open_files = crate::listener::raise_open_files_limit();
    let limits = settings.connections.fitted_to(open_files);
    if limits.max_open < settings.connections.max_open {
        tracing::warn!(
            wanted = settings.connections.max_open,
            allowed = limits.max_open,
            open_files,
            "--http-max-connections lowered to fit the open-files limit (raise it with ulimit -n)"
        );
    }
    tracing::info!(
        %addr,
        auth = settings.tokens.is_some(),
        max_connections = limits.max_open,
        max_per_peer = limits.max_per_peer,
        "serving MCP on HTTP at /mcp"
    );
    crate::listener::serve(
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

/// Who presented an accepted token: a digest of it (never the token), which owns the
/// sessions made with it, and what the token may do. Put in the request's extensions for the
/// tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner(pub String, pub Grants);

impl TokenOwner {
    fn of(token: &[u8], grants: Grants) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token);
        Self(digest.iter().map(|b| format!("{b:02x}")).collect(), grants)
    }
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
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over {max_body} bytes (twice --max-input, plus framing)\n"
            ),
        )
            .into_response()
    };
    if let Some(size) = declared.filter(|&size| size > max_body) {
        // Read and drop what the client sends (up to a few times the limit, for a few
        // seconds): a client that writes its whole body before it reads the answer (urllib)
        // would otherwise see a broken pipe instead of the 413. Nothing is kept.
        if size <= 4 * max_body {
            use futures::StreamExt;
            let mut body = request.into_body().into_data_stream();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(_)) = body.next().await {}
            })
            .await;
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
        let id = request_id(&bytes[..bytes.len().min(64 << 10)]);
        tracing::warn!(?id, "{refused}");
        let reply = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": -32600, "message": refused.to_string()},
        });
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            reply.to_string(),
        )
            .into_response();
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    drop(share);
    response
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
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
                let count = read.0.len();
                *tokens.write().unwrap_or_else(|e| e.into_inner()) = read;
                tracing::info!(tokens = count, "tokens reloaded");
            }
            Ok(_) => tracing::warn!("the tokens file is empty; keeping the tokens in use"),
            Err(error) => tracing::warn!(%error, "keeping the tokens in use"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_comments_and_refuse_weak_ones() {
        let tokens =
            Tokens::parse("# team\n\nalice-0123456789abcdef\n  bob-0123456789abcdef  \n").unwrap();
        assert!(tokens.accepts(b"alice-0123456789abcdef"));
        assert!(tokens.accepts(b"bob-0123456789abcdef"));
        assert!(!tokens.accepts(b"alice-0123456789abcde"));
        assert!(!tokens.accepts(b""));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("has a space in it 0123456789\n").is_err());
        let error = Tokens::parse("alice-0123456789abcdef sEcReT-half\n").unwrap_err();
        assert!(!error.contains("sEcReT"), "never echoed: {error}");
        assert!(Tokens::single("a-0123456789abcdef\nb-0123456789abcdef").is_err());
        assert_eq!(
            format!("{tokens:?}"),
            "Tokens(2 configured)",
            "never the tokens"
        );
    }

    #[test]
    fn a_token_may_install_only_when_its_line_says_so_or_it_is_the_only_one() {
        let tokens = Tokens::parse(
            "alice-0123456789abcdef install\nbob-0123456789abcdef\ncarol-0123456789abcdef  install  install\n",
        )
        .unwrap();
        let may = |t: &str| tokens.grants(t.as_bytes()).map(|g| g.install);
        assert_eq!(may("alice-0123456789abcdef"), Some(true));
        assert_eq!(may("bob-0123456789abcdef"), Some(false));
        assert_eq!(may("carol-0123456789abcdef"), Some(true));
        assert_eq!(may("install"), None, "a permission is not a token");
        assert_eq!(may("mallory-0123456789abcdef"), None);
        let single = Tokens::single("solo-0123456789abcdef").unwrap();
        assert_eq!(
            single.grants(b"solo-0123456789abcdef"),
            Some(Grants { install: true })
        );
        assert!(Tokens::single("solo-0123456789abcdef install").is_err());
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
