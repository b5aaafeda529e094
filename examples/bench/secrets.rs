//! `make bench`'s secrets row: what interception costs a request. A loopback HTTPS server
//! (its certificate from an authority made here, which the server under test trusts through
//! `SSL_CERT_FILE`) listens on two ports; a secret is bound to one, the other is only allowed.
//! A program makes 100 requests to each, a new connection each (as `urllib` does), with the
//! placeholder in `Authorization`; p50 and p95 of each, timed in the container. Bound: two
//! TLS handshakes (program–proxy, proxy–host) and the rewrite; unbound: one, through a tunnel.

use std::sync::Arc;
use std::time::Duration;

use mcp_python_executor::config::SandboxArgs;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

const REQUESTS: usize = 100;
const SECRET: &str = "PYEXEC_BENCH_KEY_VALUE";

/// An authority and a certificate for 127.0.0.1 from it: the authority's PEM, and the
/// server's configuration.
fn certificates() -> anyhow::Result<(String, Arc<ServerConfig>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = named("pyexec bench CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = named("127.0.0.1");
    leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse()?)];
    let cert = leaf.signed_by(&key, &issuer)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], private)?;
    Ok((ca_cert.pem(), Arc::new(config)))
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Serves `ok` to every request on a loopback port, over TLS; the port.
async fn https_server(config: Arc<ServerConfig>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// 100 requests to each port, a connection each; prints the bound and unbound p50 and p95
/// in ms.
fn program(bound: u16, unbound: u16, ca: &str) -> String {
    format!(
        r#"
import http.client, os, ssl, time
context = ssl.create_default_context()
context.load_verify_locations(cadata="""{ca}""")
key = os.environ["BENCH_KEY"]
def once(port):
    c = http.client.HTTPSConnection("127.0.0.1", 3128, context=context, timeout=30)
    c.set_tunnel("127.0.0.1", port)
    started = time.perf_counter()
    c.request("GET", "/", headers={{"Authorization": "Bearer " + key}})
    r = c.getresponse()
    assert r.read() == b"ok", r.status
    took = time.perf_counter() - started
    c.close()
    return took * 1000
def p(samples, q):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(q * len(samples)))]
for port in ({bound}, {unbound}):
    once(port)
    samples = [once(port) for _ in range({REQUESTS})]
    print(p(samples, 0.5), p(samples, 0.95))
"#
    )
}

/// The secrets row.
pub async fn row() -> anyhow::Result<String> {
    let (ca, config) = certificates()?;
    let (bound, unbound) = (
        https_server(config.clone()).await?,
        https_server(config).await?,
    );
    let roots = std::env::temp_dir().join(format!("pyexec-bench-ca-{}.pem", std::process::id()));
    std::fs::write(&roots, &ca)?;
    // SAFETY: set before the sandbox below reads it, while no other thread of this bench
    // reads the environment.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &roots);
        std::env::set_var("BENCH_KEY", SECRET);
    }
    let mut args = SandboxArgs {
        pool_size: 0,
        ..SandboxArgs::default()
    };
    args.egress.allow_host = vec![format!("127.0.0.1:{unbound}")];
    args.egress.secret = vec![format!("BENCH_KEY=127.0.0.1:{bound}")];
    let resolved = args.resolve();
    let _ = std::fs::remove_file(&roots);
    let sandbox = Arc::new(Sandbox::new(resolved?));
    let result = sandbox
        .execute(
            &ExecutionRequest::new(program(bound, unbound, &ca)),
            &CancellationToken::new(),
        )
        .await?;
    sandbox.shutdown(Duration::from_secs(10)).await;
    anyhow::ensure!(!result.failed(), "{result:?}");
    let lines: Vec<Vec<f64>> = result
        .stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .collect();
    anyhow::ensure!(
        lines.len() == 2 && lines.iter().all(|l| l.len() == 2),
        "{lines:?}"
    );
    Ok(format!(
        "| {REQUESTS} HTTPS requests, a connection each: bound host (intercepted, secret \
         injected) vs unbound (tunnel), p50 / p95, timed in the container | {:.1} / {:.1} vs \
         {:.1} / {:.1} ms, {:.2}× at p50 |",
        lines[0][0],
        lines[0][1],
        lines[1][0],
        lines[1][1],
        lines[0][0] / lines[1][0],
    ))
}
