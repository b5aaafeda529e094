//! `make bench`'s egress rows: what the proxy costs a call. Warm `print(1)` p50 with an
//! allowlist (the container also gets its proxy's socket, mount and relay) next to without
//! (target: within 1.2×), and a 100 MiB download from a loopback server through the proxy
//! against the same download without it, from a container on the host's network (target:
//! ≥ 0.8× its throughput). The download is timed inside the container, so container start
//! and teardown are not in it.

use std::sync::Arc;
use std::time::Duration;

use mcp_python_executor::config::SandboxArgs;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DOWNLOAD: usize = 100 << 20;
/// Downloads per side; the median is reported.
const DOWNLOADS: usize = 5;

/// A loopback HTTP server answering every request with [`DOWNLOAD`] bytes.
async fn bulk_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {DOWNLOAD}\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..DOWNLOAD / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn sandbox(pool: u64, change: impl FnOnce(&mut SandboxArgs)) -> anyhow::Result<Arc<Sandbox>> {
    let mut args = SandboxArgs {
        pool_size: pool,
        ..SandboxArgs::default()
    };
    change(&mut args);
    Ok(Arc::new(Sandbox::new(args.resolve()?)))
}

/// The download's seconds, timed in the container; `proxy` is the proxy's host and port,
/// or `None` to connect straight to the server.
fn download_code(port: u16, proxy: Option<(&str, u16)>) -> String {
    let (host, connect_port, target) = match proxy {
        Some((host, proxy_port)) => (
            host.to_string(),
            proxy_port,
            format!("http://127.0.0.1:{port}/"),
        ),
        None => ("127.0.0.1".to_string(), port, "/".to_string()),
    };
    format!(
        r#"
import http.client, time
c = http.client.HTTPConnection("{host}", {connect_port}, timeout=60)
started = time.monotonic()
c.request("GET", "{target}")
r = c.getresponse()
got = 0
while True:
    chunk = r.read(1 << 20)
    if not chunk:
        break
    got += len(chunk)
assert got == {DOWNLOAD}, got
print(time.monotonic() - started)
"#
    )
}

async fn timed_download(sandbox: &Sandbox, code: &str) -> anyhow::Result<Duration> {
    let result = sandbox
        .execute(&ExecutionRequest::new(code), &CancellationToken::new())
        .await?;
    anyhow::ensure!(!result.failed(), "{result:?}");
    let seconds: f64 = result.stdout.trim().parse()?;
    Ok(Duration::from_secs_f64(seconds))
}

async fn median_download(sandbox: &Sandbox, code: &str) -> anyhow::Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..DOWNLOADS {
        sandbox.settle().await;
        samples.push(timed_download(sandbox, code).await?);
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The egress rows, given the warm p50 without an allowlist measured above, and the
/// function that measures a warm p50 on a sandbox.
pub async fn rows<F, Fut>(warm50: Duration, warm_p50: F) -> anyhow::Result<String>
where
    F: Fn(Arc<Sandbox>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let port = bulk_server().await?;
    let allowed = format!("127.0.0.1:{port}");
    let with_allowlist = sandbox(2, |args| {
        args.egress.allow_host = vec![allowed.clone()];
        args.egress.egress_max_bytes = 1 << 30;
    })?;
    with_allowlist.start_pool();
    let allow50 = warm_p50(with_allowlist.clone()).await?;
    let through = median_download(
        &with_allowlist,
        &download_code(port, Some(("127.0.0.1", 3128))),
    )
    .await?;
    with_allowlist.shutdown(Duration::from_secs(10)).await;
    let direct_box = sandbox(0, |args| args.network = "host".to_string())?;
    let direct = median_download(&direct_box, &download_code(port, None)).await?;
    direct_box.shutdown(Duration::from_secs(10)).await;
    let mib_s = |d: Duration| DOWNLOAD as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = mib_s(through) / mib_s(direct);
    Ok(format!(
        "\n| egress | result |\n| --- | --- |\n\
         | warm `print(1)` p50 with an allowlist ≤ 1.2× without | {:.1} vs {:.1} ms, {:.2}× — {} |\n\
         | 100 MiB from a loopback server through the proxy ≥ 0.8× without (median of {DOWNLOADS}, timed in the container) | {:.0} vs {:.0} MiB/s, {:.2}× — {} |",
        ms(allow50),
        ms(warm50),
        ms(allow50) / ms(warm50),
        verdict(allow50.as_secs_f64() <= 1.2 * warm50.as_secs_f64()),
        mib_s(through),
        mib_s(direct),
        ratio,
        verdict(ratio >= 0.8),
    ))
}
