//! A bound host's tunnel, opened (`--secret`): the proxy finishes the program's TLS itself,
//! with the host's certificate from its own authority (`authority.rs`), reads each HTTP/1.1
//! request, puts the values of the secrets bound to that host where their placeholders are
//! (header values, the request target), sends it on over TLS that verifies the real host,
//! and masks the values in the answer (headers and body) before the program reads it. Only
//! HTTP/1.1 is offered (ALPN), so nothing reaches the host unread; answers come unencoded
//! (`Accept-Encoding: identity`; a compressed one is refused, it could hide a value) and
//! whole (no `Range`: a part of a value matches no mask). A request holding another secret's
//! placeholder, or one in a header's name, is refused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::headers::prepare;
use super::ledger::{Entry, Ledger, Metered, Verdict};
use super::reply::{Body, SECRET_HINT, answer, refused};
use super::rules::Host;
use super::secrets::{Masker, Secrets};
use super::tunnel::idle;

/// How long either TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

type Upstream = Arc<Mutex<SendRequest<Incoming>>>;

/// One intercepted tunnel, and what it needs of its proxy.
pub(super) struct Interception {
    pub(super) secrets: Arc<Secrets>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) host: Host,
    pub(super) port: u16,
    pub(super) entry: Option<Entry>,
    pub(super) tasks: TaskTracker,
    pub(super) stop: CancellationToken,
}

impl Interception {
    /// Runs the tunnel: the program's handshake, the host's, then requests until either
    /// side ends, nothing moves for [`super::tunnel::IDLE`], or the proxy stops. `upstream`
    /// is the host's socket, counted; `touched` its last use.
    pub(super) async fn run<C>(self, client: C, upstream: Metered, touched: Arc<AtomicU64>)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(server) = self.secrets.authority().server(&self.host) else {
            return;
        };
        let accepted =
            tokio::time::timeout(HANDSHAKE, TlsAcceptor::from(server).accept(client)).await;
        let Ok(Ok(program)) = accepted else {
            self.refuse(
                "the program's TLS handshake with the proxy failed (the proxy's \
                         certificate authority is in SSL_CERT_FILE)",
            );
            return;
        };
        if let Some(asked) = program.get_ref().1.server_name()
            && Host::parse(asked).ok().as_ref() != Some(&self.host)
        {
            self.refuse(&format!(
                "the TLS ClientHello asks for {asked}, not {}",
                self.host
            ));
            return;
        }
        let this = Arc::new(self);
        let upstream = this.connect(upstream).await;
        let stop = this.stop.clone();
        let serving = async {
            match upstream {
                Ok(upstream) => this.clone().serve(program, upstream).await,
                Err(why) => {
                    this.refuse(&why);
                    let text = format!("egress: {}:{}: {why}\n", this.host, this.port);
                    let service = hyper::service::service_fn(move |_| {
                        let answer = answer(StatusCode::BAD_GATEWAY, &text);
                        async move { Ok::<_, hyper::Error>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(program), service)
                        .await;
                }
            }
        };
        tokio::select! {
            _ = serving => {}
            _ = idle(&touched) => {}
            _ = stop.cancelled() => {}
        }
    }

    /// The host's TLS, verified, and an HTTP/1.1 connection over it; or why not.
    async fn connect(&self, upstream: Metered) -> Result<Upstream, String> {
        let name = match &self.host {
            Host::Name(name) => ServerName::try_from(name.clone()).map_err(|e| e.to_string())?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let connector = TlsConnector::from(self.secrets.authority().upstream());
        let tls = match tokio::time::timeout(HANDSHAKE, connector.connect(name, upstream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return Err(format!("TLS with the host failed: {error}")),
            Err(_) => {
                return Err(format!(
                    "no TLS handshake with the host in {} s",
                    HANDSHAKE.as_secs()
                ));
            }
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1 with the host failed: {e}"))?;
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
        });
        Ok(Arc::new(Mutex::new(sender)))
    }

    /// Serves the program's requests, one at a time, each passed on to the host.
    async fn serve<S>(self: Arc<Self>, program: S, upstream: Upstream)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |request| {
            let (this, upstream) = (self.clone(), upstream.clone());
            async move { Ok::<_, hyper::Error>(this.exchange(request, &upstream).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(program), service)
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "intercepted connection ended");
        }
    }

    /// One request: rewritten (or refused), sent, and its answer masked.
    async fn exchange(
        &self,
        mut request: Request<Incoming>,
        upstream: &Upstream,
    ) -> Response<Body> {
        if let Err(why) = self.rewrite(&mut request) {
            return refused(&self.ledger, &self.host, self.port, &why, SECRET_HINT);
        }
        let mut sender = upstream.lock().await;
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(request).await,
            Err(error) => Err(error),
        };
        drop(sender);
        match sent {
            Ok(response) => self.unmask(response),
            Err(_) => answer(
                StatusCode::BAD_GATEWAY,
                &format!("egress: the request to {} failed\n", self.host),
            ),
        }
    }

    /// The request as the host gets it: origin form, one agreeing `Host`, hop-by-hop headers
    /// dropped, the bound secrets' values in place of their placeholders, and an answer
    /// asked for unencoded. Refused with why.
    fn rewrite(&self, request: &mut Request<Incoming>) -> Result<(), String> {
        if let Some(authority) = request.uri().authority()
            && Host::parse(authority.host()).ok().as_ref() != Some(&self.host)
        {
            return Err("the request's URL names another host".to_string());
        }
        prepare(request, &self.host, self.port, 443)?;
        for name in request.headers().keys() {
            if let Some(secret) = self.secrets.named_in(name.as_str().as_bytes()) {
                return Err(format!("secret {secret}'s placeholder is in a header name"));
            }
        }
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let (injected, mut names) = self
            .secrets
            .inject_query(&target, &self.host, self.port)
            .map_err(|leak| leak.0)?;
        let target = match &injected {
            Some(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            None => target.as_str(),
        };
        *request.uri_mut() = target
            .parse()
            .map_err(|_| "a secret's value cannot be written in this URL".to_string())?;
        let mut headers = HeaderMap::with_capacity(request.headers().len());
        for (name, value) in request.headers() {
            let (injected, more) = self
                .secrets
                .inject(value.as_bytes(), &self.host, self.port)
                .map_err(|leak| leak.0)?;
            names.extend(more);
            let value = match injected {
                Some(bytes) => {
                    let mut value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                        "a secret's value cannot be written in a header".to_string()
                    })?;
                    value.set_sensitive(true);
                    value
                }
                None => value.clone(),
            };
            headers.append(name.clone(), value);
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // A part of an answer could hold a part of an echoed value, which no mask matches.
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
        *request.headers_mut() = headers;
        for name in names {
            self.ledger.inject(self.entry, name);
        }
        Ok(())
    }

    /// The host's answer as the program gets it: every value masked, in headers and body.
    fn unmask(&self, response: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        if let Some(coding) = coded(&parts.headers) {
            let why = format!(
                "the host answered with the coding {coding} though asked for none, and a coded \
                 answer could carry a secret's value unmasked"
            );
            self.refuse(&why);
            return answer(
                StatusCode::BAD_GATEWAY,
                &format!("egress: {}:{}: {why}\n", self.host, self.port),
            );
        }
        // A reason phrase the host chose (hyper keeps it as an extension and writes it on)
        // could carry a value: the program gets the standard one.
        parts.extensions.clear();
        let mut headers = HeaderMap::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            if self.secrets.mask(name.as_str().as_bytes()).is_some() {
                continue; // a header named with a value
            }
            let value = match self.secrets.mask(value.as_bytes()) {
                Some(masked) => HeaderValue::from_bytes(&masked)
                    .unwrap_or_else(|_| HeaderValue::from_static("")),
                None => value.clone(),
            };
            headers.append(name.clone(), value);
        }
        // Masking may change the body's length (it goes chunked), and the length of a body
        // not sent (HEAD, 304) is the length of what the host would have sent, value and all.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        parts.headers = headers;
        let body = Masked {
            inner: body,
            masker: self.secrets.masker(),
            ended: false,
        };
        Response::from_parts(parts, body.boxed())
    }

    /// Notes a refusal in the call's ledger, and in the log (the reason names no value).
    fn refuse(&self, why: &str) {
        tracing::info!(host = %self.host, port = self.port, reason = %why, "egress refused");
        self.ledger
            .note(&self.host, self.port, Verdict::Blocked, Some(why));
    }
}

/// A content or transfer coding of an answer other than `identity` and `chunked` (every
/// header, every listed coding), which would hide a value from the mask.
fn coded(headers: &HeaderMap) -> Option<String> {
    let codings = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .chain(headers.get_all(header::TRANSFER_ENCODING).iter())
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|coding| coding.trim().to_ascii_lowercase());
    codings
        .into_iter()
        .find(|c| !c.is_empty() && c != "identity" && c != "chunked")
}

/// A host's body with every value masked, piece by piece; trailers are dropped.
struct Masked {
    inner: Incoming,
    masker: Masker,
    ended: bool,
}

impl hyper::body::Body for Masked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let piece = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.masker.feed(&data, false),
                    Err(_) => continue,
                },
                Some(Err(error)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    self.ended = true;
                    self.masker.feed(&[], true)
                }
            };
            if !piece.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(piece)))));
            }
        }
    }
}
