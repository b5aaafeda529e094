//! The egress proxy's core: HTTP `CONNECT` tunnels and plain-HTTP forwarding (absolute-form),
//! each decided on the name the program asked for, then on every address that name resolves
//! to (the proxy resolves it, and connects only to the addresses it checked), then, for a
//! TLS tunnel, on the name the ClientHello asks for. Every attempt is written in a [`Ledger`]
//! the call reports; bytes and connections are bounded per ledger. A refusal is a 403 whose
//! body says what was refused, why, and how an operator allows it.
//!
//! One proxy serves one container (`endpoint.rs` gives it its socket); everything it runs
//! ends when [`Proxy::stop`] is called, and a tunnel with no byte either way for
//! [`super::tunnel::IDLE`] is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::headers::prepare;
use super::intercept::Interception;
use super::ledger::{Entry, Ledger, Metered, Open, Verdict, clock};
use super::reply::{ALLOW_HINT, Body, SECRET_HINT, answer, empty, refused};
use super::resolve::{admit, places};
use super::rules::{Allowlist, Host};
use super::secrets::Secrets;
use super::tunnel::{idle, opening};

/// What the proxy lets one call do.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allow: Allowlist,
    /// Names may resolve to private network addresses (`--egress-allow-private`): 10/8,
    /// 172.16/12, 192.168/16, 100.64/10 and fc00::/7. Never loopback, link-local (metadata)
    /// or the rest [`forbidden`] names.
    pub allow_private: bool,
    /// Bytes in and out together, over all connections.
    pub max_bytes: u64,
    /// Connections open at once.
    pub max_connections: usize,
    pub connect_timeout: Duration,
    /// The secrets the proxy injects for their hosts (`--secret`), if any.
    pub secrets: Option<Arc<Secrets>>,
}

/// One call's proxy: its policy, its ledger and the tunnels it runs.
#[derive(Clone)]
pub struct Proxy {
    policy: Arc<Policy>,
    ledger: Arc<Ledger>,
    tasks: TaskTracker,
    /// Cancelled by [`Proxy::stop`]: every connection and tunnel of this proxy ends.
    stop: CancellationToken,
    /// This proxy's name lookups running at once (`resolve.rs`).
    lookups: Arc<tokio::sync::Semaphore>,
}

/// Each direction's buffer in a tunnel: large enough that a bulk download is not bound by
/// the number of reads.
const BUFFER: usize = 256 << 10;

impl Proxy {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            ledger: Arc::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            lookups: places(),
        }
    }

    /// Ends every connection and tunnel of this proxy, now and later.
    pub fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
    }

    /// Cancelled once the proxy is stopped.
    pub fn stopped(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Tunnels and forwarded exchanges still running.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Serves one client connection (HTTP/1.1, with upgrades for `CONNECT`) until it ends or
    /// the proxy stops.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, hyper::Error>(proxy.handle(request).await) }
        });
        let serving = hyper::server::conn::http1::Builder::new()
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let served = tokio::select! {
            served = serving => served,
            _ = self.stop.cancelled() => return,
        };
        if let Err(error) = served {
            tracing::debug!(%error, "egress client connection ended");
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() == Method::CONNECT {
            self.connect(request).await
        } else {
            self.forward(request).await
        }
    }

    /// `CONNECT host:port`: checked, connected, then the tunnel runs on a task of its own.
    async fn connect(&self, request: Request<Incoming>) -> Response<Body> {
        let Some((host, port)) = request
            .uri()
            .authority()
            .and_then(|a| Some((Host::parse(a.host()).ok()?, a.port_u16()?)))
        else {
            return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
        };
        if let Some(refusal) = self.leaked(&request, &host, port, false) {
            return refusal;
        }
        let (upstream, open, entry) = match self.open(&host, port).await {
            Ok(opened) => opened,
            Err(refusal) => return refusal,
        };
        let proxy = self.clone();
        self.tasks.spawn(async move {
            let stop = proxy.stop.clone();
            let running = async {
                let Ok(upgraded) = hyper::upgrade::on(request).await else {
                    return;
                };
                let client = TokioIo::new(upgraded);
                match proxy.policy.secrets.clone() {
                    Some(secrets) if secrets.bound(&host, port) => {
                        let touched = Arc::new(AtomicU64::new(clock()));
                        let upstream = proxy.metered(upstream, entry, touched.clone());
                        let interception = Interception {
                            secrets,
                            ledger: proxy.ledger.clone(),
                            host,
                            port,
                            entry,
                            tasks: proxy.tasks.clone(),
                            stop: proxy.stop.clone(),
                        };
                        interception.run(client, upstream, touched).await;
                    }
                    _ => proxy.tunnel(client, upstream, host, port, entry).await,
                }
            };
            tokio::select! {
                _ = running => {}
                _ = stop.cancelled() => {}
            }
            drop(open);
        });
        Response::new(empty())
    }

    /// Checks `host:port` and connects to it: the socket, the connection's place and the
    /// ledger entry; or the 403 (or 502) to answer.
    async fn open(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<(TcpStream, Open, Option<Entry>), Response<Body>> {
        if self.ledger.spent() {
            return Err(self.refuse(
                host,
                port,
                "the call's egress byte limit (--egress-max-bytes) is spent".to_string(),
            ));
        }
        let Some(open) = Open::take(&self.ledger, self.policy.max_connections) else {
            return Err(self.refuse(
                host,
                port,
                format!(
                    "too many connections at once (the limit is {})",
                    self.policy.max_connections
                ),
            ));
        };
        let policy = &self.policy;
        let addresses = admit(
            &policy.allow,
            policy.allow_private,
            host,
            port,
            self.lookup(),
        )
        .await
        .map_err(|why| self.refuse(host, port, why))?;
        let connected =
            tokio::time::timeout(self.policy.connect_timeout, connect(&addresses)).await;
        match connected {
            Ok(Ok(stream)) => {
                let entry = self.ledger.note(host, port, Verdict::Allowed, None);
                Ok((stream, open, entry))
            }
            _ => {
                let why = format!(
                    "no connection: refused, unreachable or no answer in {} s",
                    self.policy.connect_timeout.as_secs()
                );
                tracing::info!(%host, port, reason = %why, "egress failed");
                self.ledger.note(host, port, Verdict::Blocked, Some(&why));
                Err(answer(
                    StatusCode::BAD_GATEWAY,
                    &format!("egress: could not connect to {host}:{port}: {why}\n"),
                ))
            }
        }
    }

    fn lookup(&self) -> (&Arc<tokio::sync::Semaphore>, Duration) {
        (&self.lookups, self.policy.connect_timeout)
    }

    /// Records a refusal and makes its 403.
    fn refuse(&self, host: &Host, port: u16, why: String) -> Response<Body> {
        refused(&self.ledger, host, port, &why, ALLOW_HINT)
    }

    /// A 403 when the request line or a header (name or value) holds a secret's placeholder
    /// that may not go to `host:port` (`plain`: unencrypted, where no secret goes).
    fn leaked<B>(
        &self,
        request: &Request<B>,
        host: &Host,
        port: u16,
        plain: bool,
    ) -> Option<Response<Body>> {
        let secrets = self.policy.secrets.as_ref()?;
        let leak = secrets.leak_in(request, host, port, plain).err()?;
        Some(refused(&self.ledger, host, port, &leak.0, SECRET_HINT))
    }

    /// Runs a tunnel: the client's first bytes must be a ClientHello for the host asked for
    /// (or not TLS at all); then bytes flow both ways, counted, until either side ends or
    /// the byte budget is spent.
    async fn tunnel<C>(
        &self,
        mut client: C,
        upstream: TcpStream,
        host: Host,
        port: u16,
        entry: Option<Entry>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let seen = match opening(&mut client, &upstream, &host).await {
            Ok(seen) => seen,
            Err(Some(why)) => {
                self.refuse(&host, port, why);
                return;
            }
            Err(None) => return,
        };
        let touched = Arc::new(AtomicU64::new(clock()));
        let mut upstream = self.metered(upstream, entry, touched.clone());
        if upstream.write_all(&seen).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => {}
            _ = idle(&touched) => {}
        }
    }

    fn metered(
        &self,
        upstream: TcpStream,
        entry: Option<Entry>,
        touched: Arc<AtomicU64>,
    ) -> Metered {
        Metered {
            inner: upstream,
            ledger: self.ledger.clone(),
            entry,
            max: self.policy.max_bytes,
            touched,
        }
    }

    /// A plain-HTTP request in absolute form, forwarded once its `Host` agrees with its URI.
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("http") {
            return answer(
                StatusCode::BAD_REQUEST,
                "egress: send http:// URLs in absolute form, and https through CONNECT\n",
            );
        }
        let Some((host, port)) = uri
            .authority()
            .and_then(|a| Some((Host::parse(a.host()).ok()?, a.port_u16().unwrap_or(80))))
        else {
            return answer(StatusCode::BAD_REQUEST, "egress: the URL names no host\n");
        };
        if let Some(refusal) = self.leaked(&request, &host, port, true) {
            return refusal;
        }
        if let Err(why) = prepare(&mut request, &host, port, 80) {
            return self.refuse(&host, port, why);
        }
        let (upstream, open, entry) = match self.open(&host, port).await {
            Ok(opened) => opened,
            Err(refusal) => return refusal,
        };
        let touched = Arc::new(AtomicU64::new(clock()));
        let metered = self.metered(upstream, entry, touched.clone());
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(metered)).await
        else {
            return answer(
                StatusCode::BAD_GATEWAY,
                "egress: the upstream handshake failed\n",
            );
        };
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = idle(&touched) => {}
                _ = stop.cancelled() => {}
            }
            drop(open);
        });
        if let Some(path) = uri.path_and_query() {
            *request.uri_mut() = path.as_str().parse().unwrap_or_default();
        }
        match sender.send_request(request).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(_) => answer(
                StatusCode::BAD_GATEWAY,
                "egress: the upstream request failed\n",
            ),
        }
    }
}

/// Connects to the first of `addresses` that answers.
async fn connect(addresses: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // A request's head and body, or TLS records, go out as they are written, not
                // held for the host's ACK of the last segment.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}
