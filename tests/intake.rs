//! What waiting calls cost the server, against the built binary over HTTP with the token (the
//! route by which any token holder could queue requests): a request is held as its bytes, not
//! as a `Vec<String>` of millions of entries; `inputData` is capped in entries; the queue
//! admits a call only while the bytes held by waiting calls stay under `--max-queue-bytes`,
//! and answers busy at once beyond. The server's peak RSS (`VmHWM`) is what is measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");
const TOKEN: &str = "intake-token-0123456789abcdef";

/// The binary serving HTTP on loopback, ended with SIGTERM on drop (its containers go with it).
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Server {
    fn start(flags: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = std::process::Command::new(BINARY);
        if !flags.contains(&"--http-tokens") {
            command.env("PYEXEC_HTTP_TOKEN", TOKEN);
        }
        let child = command
            .args(["--http", &addr.to_string()])
            .args(flags)
            .env("PYEXEC_POOL_SIZE", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the server starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the server listens within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }

    /// The most memory the server has held (`VmHWM`), in MiB.
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server is alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib / 1024
    }

    async fn client(&self) -> RunningService<RoleClient, ()> {
        let transport = StreamableHttpClientTransport::with_client(
            reqwest::Client::builder().no_proxy().build().unwrap(),
            StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", self.addr))
                .auth_header(TOKEN),
        );
        ().serve(transport).await.expect("MCP handshake")
    }

    /// One gauge of `/metrics`.
    async fn gauge(&self, name: &str) -> u64 {
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{}/metrics", self.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
    }

    /// Waits (up to 120 s) until the gauge `name` reads `value`.
    async fn until(&self, name: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = self.gauge(name).await;
            if now == value {
                return;
            }
            assert!(Instant::now() < deadline, "{name} is {now}, not {value}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn call(
    client: &RunningService<RoleClient, ()>,
    arguments: Value,
) -> impl Future<Output = Result<CallToolResult, ServiceError>> + 'static {
    let peer = client.peer().clone();
    async move {
        peer.call_tool(
            CallToolRequestParams::new("execute_python")
                .with_arguments(arguments.as_object().unwrap().clone()),
        )
        .await
    }
}

/// Two calls that sleep, holding both slots of a `--concurrency 2` server.
fn occupy_both_slots(
    client: &RunningService<RoleClient, ()>,
) -> Vec<tokio::task::JoinHandle<Result<CallToolResult, ServiceError>>> {
    (0..2)
        .map(|_| {
            tokio::spawn(call(
                client,
                json!({"code": "import time; time.sleep(600)"}),
            ))
        })
        .collect()
}

fn text(result: &CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap().to_string()
}

/// A request of 12 MB on the wire: a hundred thousand lines (the most inputData may have) of
/// 109 characters.
fn big_request() -> Value {
    json!({
        "code": "import sys; print(len(sys.stdin.read()))",
        "inputData": vec!["0123456789".repeat(11)[..109].to_string(); 100_000],
    })
}

/// The finding: two sleepers hold both slots, then ten 12 MB requests wait, which took the
/// server from 13 to 1,626 MiB when each was held as millions of strings. Held as bytes they
/// fit in 300 MiB; an eleventh would pass `--max-queue-bytes` and is answered busy at once,
/// while the ten still wait. Four million empty strings (12 MB, 4 MB of stdin) are refused by
/// their entry count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_calls_hold_their_bytes_and_the_queue_is_bounded_by_them() {
    let server = Server::start(&[
        "--concurrency",
        "2",
        "--max-input",
        "12m",
        "--max-queue-bytes",
        "110m",
        "--timeout",
        "300",
    ]);
    let client = server.client().await;
    let start = server.peak_rss_mib();

    let empties = json!({"code": "print(1)", "inputData": vec![""; 4_000_000]});
    let refused = match call(&client, empties).await {
        Ok(result) => panic!("four million entries are refused: {}", text(&result)),
        Err(error) => error.to_string(),
    };
    assert!(refused.contains("JSON values"), "{refused}");
    let after_refusal = server.peak_rss_mib();

    let sleepers = occupy_both_slots(&client);
    server.until("pyexec_busy_slots", 2).await;
    let waiting: Vec<_> = (0..10)
        .map(|_| tokio::spawn(call(&client, big_request())))
        .collect();
    server.until("pyexec_queue_depth", 10).await;
    let held = server.gauge("pyexec_queue_bytes").await;
    assert!(
        (110_000_000..=110_001_000).contains(&held),
        "ten calls hold their stdin and code: {held} bytes"
    );

    let busy = call(&client, big_request())
        .await
        .expect("a busy call is a tool error");
    assert_eq!(busy.is_error, Some(true), "{}", text(&busy));
    assert!(text(&busy).contains("--max-queue-bytes"), "{}", text(&busy));
    assert_eq!(
        server.gauge("pyexec_queue_depth").await,
        10,
        "the ten still wait"
    );
    let peak = server.peak_rss_mib();
    eprintln!(
        "server peak RSS: {start} MiB at start, {after_refusal} after the 4M-entry request, \
         {peak} with ten 12 MB calls waiting"
    );
    assert!(after_refusal < 300, "4M entries: peak {after_refusal} MiB");
    assert!(peak < 300, "ten waiting 12 MB calls: peak {peak} MiB");

    for task in sleepers.into_iter().chain(waiting) {
        task.abort();
    }
    drop(client);
}

/// The red team's follow-up: only code and input were counted, while a call held its whole
/// `_meta` as it waited; 60 waiting calls with 8 MB of `_meta` took the server to 532 MiB. A
/// call now keeps only its progress token (256 bytes at most) and drops the rest of `_meta`
/// as it starts: twenty waiting calls with 4 MB of it each leave the server's peak far below
/// what holding them would take (80 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_call_does_not_hold_its_meta() {
    let server = Server::start(&["--concurrency", "2", "--timeout", "300"]);
    let client = server.client().await;
    let start = server.peak_rss_mib();
    let sleepers = occupy_both_slots(&client);
    server.until("pyexec_busy_slots", 2).await;
    let junk = "A".repeat(4_000_000);
    let waiting: Vec<_> = (0..20)
        .map(|i| {
            let peer = client.peer().clone();
            let params: CallToolRequestParams = serde_json::from_value(json!({
                "name": "execute_python",
                "arguments": {"code": format!("print({i})")},
                "_meta": {"junk": junk, "progressToken": junk},
            }))
            .unwrap();
            tokio::spawn(async move { peer.call_tool(params).await })
        })
        .collect();
    server.until("pyexec_queue_depth", 20).await;
    let peak = server.peak_rss_mib();
    eprintln!(
        "server peak RSS: {start} MiB at start, {peak} with twenty calls of 4 MB _meta waiting"
    );
    assert!(
        peak < start + 60,
        "the _meta of waiting calls is held: {start} -> {peak} MiB"
    );
    for task in sleepers {
        task.abort();
    }
    for task in waiting {
        task.abort();
    }
    drop(client);
}

/// The red team's follow-up: a body with no length reserved the largest body's share of the
/// budget for up to 60 s, and two of them trickling a byte every 2 s made another token's call
/// wait 59 s. One token now holds at most its own part of the budget: while four stalled
/// bodies of one token hold (or wait for) that part, another token's large call (1 MB of
/// code, so it needs a share too) is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_from_one_token_do_not_stall_another_tokens_calls() {
    use tokio::io::AsyncWriteExt;
    let tokens = std::env::temp_dir().join(format!("pyexec-tokens-{}", uuid::Uuid::new_v4()));
    let slow_token = "slow-token-0123456789abcdef";
    std::fs::write(&tokens, format!("{TOKEN}\n{slow_token}\n")).unwrap();
    let server = Server::start(&["--http-tokens", tokens.to_str().unwrap()]);
    let mut trickles = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {slow_token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // 300 KiB at once (past the small-body threshold), then nothing more.
        let chunk = vec![b' '; 300 << 10];
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        trickles.push(stream);
    }
    let client = server.client().await;
    let code = format!("x = '{}'\nprint(6 * 7)", "a".repeat(1_000_000));
    let answered = tokio::time::timeout(
        Duration::from_secs(20),
        call(&client, json!({"code": code})),
    )
    .await
    .expect("another token's call is answered while the trickles hold their bodies open")
    .expect("answered");
    assert!(text(&answered).contains("42"), "{}", text(&answered));
    drop(trickles);
    drop(client);
    std::fs::remove_file(&tokens).unwrap();
}
