//! HTTP bounded before authentication, against the built binary on loopback: half-open
//! connections (a request head never finished) from one address are capped and closed by the
//! header timeout while a token holder from another address is served; the cap in all frees
//! up when the timeout closes what holds it; idle keep-alive connections are closed; the soft
//! open-files limit is raised to the hard one; `/metrics` counts what was refused.
//!
//! Sources are 127.0.0.1 (the attacker) and 127.0.0.2 (the user): both are this machine's
//! loopback, so no traffic leaves it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");
const TOKEN: &str = "limits-token-0123456789abcdef";
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const USER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// What a half-open connection sends: a request head that never ends.
const HALF_HEAD: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// The binary serving HTTP under `prlimit --nofile=SOFT:HARD`, ended with SIGTERM on drop.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Server {
    fn start(nofile: &str, flags: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(format!("/tmp/pyexec-http-limits-{port}.log")).unwrap();
        let child = std::process::Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(BINARY)
            .args(["--http", &addr.to_string()])
            .args(flags)
            .env("PYEXEC_HTTP_TOKEN", TOKEN)
            .env("PYEXEC_POOL_SIZE", "0")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prlimit (util-linux) runs the server");
        let server = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the server listens within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Descriptors the server holds now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The soft and hard `Max open files` of the server process.
    fn nofile(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A connection to `addr` from `source`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// `count` connections from the attacker, each sent half a request head.
async fn half_open(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = connect_from(ATTACKER, addr)
            .await
            .expect("loopback connects");
        // A refused connection may be closed before this write lands; that is fine.
        let _ = stream.write_all(HALF_HEAD).await;
        held.push(stream);
    }
    held
}

/// How a held connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Turned away at once, over a cap: answered 503, or reset when the half head arrived
    /// after the server had already answered and closed.
    Refused,
    /// Closed without an answer: the header timeout.
    Closed,
}

/// Reads each connection to its end (within `within`) and says how it ended.
async fn ends(held: Vec<TcpStream>, within: Duration) -> Vec<Ended> {
    let reads = held.into_iter().map(|mut stream| async move {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(within, stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a held connection is still open after {within:?}: {:?}",
                    String::from_utf8_lossy(&answer)
                )
            });
        let reset = read
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        if answer.starts_with(b"HTTP/1.1 503") || reset {
            Ended::Refused
        } else {
            assert!(
                read.is_ok() && answer.is_empty(),
                "a held connection ends with no answer: {read:?} {:?}",
                String::from_utf8_lossy(&answer)
            );
            Ended::Closed
        }
    });
    futures::future::join_all(reads).await
}

/// An MCP client connecting from `source` with the token.
async fn client_from(source: IpAddr, addr: SocketAddr) -> RunningService<RoleClient, ()> {
    let http = reqwest::Client::builder()
        .local_address(source)
        .no_proxy()
        .build()
        .unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
            .auth_header(TOKEN),
    );
    tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .expect("the handshake is answered within 30 s")
        .expect("MCP handshake")
}

/// Runs `print(6 * 7)` and answers the text that came back.
async fn call(client: &RunningService<RoleClient, ()>) -> String {
    let arguments = serde_json::json!({"code": "print(6 * 7)"});
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        client.call_tool(
            CallToolRequestParams::new("execute_python")
                .with_arguments(arguments.as_object().unwrap().clone()),
        ),
    )
    .await
    .expect("the call is answered within 60 s")
    .expect("the call succeeds");
    serde_json::to_value(&result.content).unwrap().to_string()
}

/// `/metrics` read from `source` with the token.
async fn metrics(source: IpAddr, addr: SocketAddr) -> String {
    let http = reqwest::Client::builder()
        .local_address(source)
        .no_proxy()
        .build()
        .unwrap();
    http.get(format!("http://{addr}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap()
}

/// The value of one sample line of `/metrics`.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
}

/// The attack of the issue: 2,000 half-open connections from one address against a server
/// whose descriptors are capped at 1,024 (soft and hard, so nothing can be raised). All but
/// the per-peer cap are answered 503 at once; those held are closed by the header timeout;
/// a token holder from another address is served meanwhile; the server's descriptors stay
/// far below its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_from_one_address_cannot_stop_the_service() {
    let server = Server::start("1024:1024", &[]);
    assert_eq!(server.nofile(), (1024, 1024));
    let opened = Instant::now();
    let held = half_open(server.addr, 2000).await;
    let fds_while_held = server.open_fds();

    let client = client_from(USER, server.addr).await;
    assert!(call(&client).await.contains("42"), "the user's call runs");
    let counted = metrics(USER, server.addr).await;
    client.cancel().await.unwrap();

    let ended = ends(held, Duration::from_secs(30)).await;
    let closed_after = opened.elapsed();
    let refused = ended.iter().filter(|e| **e == Ended::Refused).count();
    let timed_out = ended.len() - refused;
    assert!(
        timed_out <= 64,
        "at most the per-peer cap (64) is held: {timed_out}"
    );
    assert!(refused >= 1936, "the rest is answered 503: {refused}");
    assert!(
        fds_while_held < 400,
        "the server held {fds_while_held} descriptors with 2,000 connections at its door"
    );
    assert_eq!(
        sample(
            &counted,
            "pyexec_http_connections_refused_total{cap=\"peer\"}"
        ),
        refused as u64,
        "every refusal is counted"
    );
    eprintln!(
        "2000 half-open: {refused} refused, {timed_out} closed by the header timeout, \
         all ended {closed_after:?} after opening; server fds while held: {fds_while_held}"
    );
}

/// The cap in all: with room for 20 connections, 30 half-open ones from one address leave no
/// room for the user (their connection is answered 503, not left hanging), until the header
/// timeout closes the 20; then the user is served. A keep-alive connection left idle after
/// its answer is closed too. The soft open-files limit is raised to the hard limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_in_all_frees_up_when_the_header_timeout_closes_what_holds_it() {
    let server = Server::start(
        "512:4096",
        &[
            "--http-max-connections",
            "20",
            "--http-max-connections-per-peer",
            "100",
        ],
    );
    assert_eq!(
        server.nofile().0,
        4096,
        "the soft limit is raised to the hard one"
    );

    // A keep-alive connection, answered once, then idle.
    let mut idle = connect_from(USER, server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let held = half_open(server.addr, 29).await;
    let mut turned_away = connect_from(USER, server.addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        turned_away.read_to_end(&mut answer),
    )
    .await
    .expect("a connection over the cap is answered and closed at once")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections"), "{answer}");

    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut rest))
        .await
        .expect("an idle keep-alive connection is closed by the header timeout")
        .unwrap();
    let ended = ends(held, Duration::from_secs(30)).await;
    assert_eq!(
        ended.iter().filter(|e| **e == Ended::Refused).count(),
        10,
        "19 of the 29 fit beside the idle one: {ended:?}"
    );

    let client = client_from(USER, server.addr).await;
    assert!(
        call(&client).await.contains("42"),
        "served once room is back"
    );
    let counted = metrics(USER, server.addr).await;
    client.cancel().await.unwrap();
    assert_eq!(
        sample(
            &counted,
            "pyexec_http_connections_refused_total{cap=\"open\"}"
        ),
        11
    );
}
