//! Egress through real containers (`--allow-host`): a call reaches an allowed upstream only
//! through its own proxy (the runner's loopback relay to the socket the server mounted), and
//! nothing else leads anywhere: no route, no DNS, no host port, no IPv6. Floods, the byte
//! limit, sessions, warm containers and cleanup. The upstream here is a server of the test's
//! own on this machine's loopback, allowed by its address and port literally (the one way a
//! loopback address may be allowed); `tests/egress_hosts.rs` (`make test-engines`) reaches test
//! hosts by name in network namespaces of its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mcp_python_executor::egress::{Attempt, CUT, Verdict};
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An HTTP/1.1 upstream on `addr` (port 0: any) that answers every request with `size` bytes
/// of `x` (or its `body`) and counts the connections it accepted.
struct Upstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

async fn upstream(addr: &str, size: usize) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
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
                    "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let chunk = vec![b'x'; 64 << 10];
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    Upstream { port, accepted }
}

fn allowing(port: u16, extra: &[&str]) -> TestSandbox {
    let pattern = format!("127.0.0.1:{port}");
    let mut flags = vec!["--allow-host", pattern.as_str(), "--pool-size", "0"];
    flags.extend_from_slice(extra);
    sandbox_with(&flags)
}

/// Python that fetches `http://127.0.0.1:{port}/` through the proxy (http.client with the
/// URL in absolute form: the variables say the same, but `NO_PROXY` rightly keeps urllib
/// off the proxy for 127.0.0.1) and prints the status and the length of the body.
fn fetch(port: u16) -> String {
    format!(
        r#"
import http.client, os
proxy = os.environ["HTTP_PROXY"].rsplit(":", 1)
c = http.client.HTTPConnection(proxy[0].split("//")[1], int(proxy[1]), timeout=20)
c.request("GET", "http://127.0.0.1:{port}/")
r = c.getresponse()
body = r.read()
print("status", r.status, "length", len(body), body[:300])
"#
    )
}

fn entry<'a>(egress: &'a [Attempt], host: &str, port: u16, verdict: Verdict) -> &'a Attempt {
    egress
        .iter()
        .find(|a| a.host == host && a.port == port && a.verdict == verdict)
        .unwrap_or_else(|| panic!("no {verdict:?} entry for {host}:{port} in {egress:?}"))
}

#[tokio::test]
async fn an_allowed_upstream_is_reached_through_the_proxy_and_the_rest_is_refused_and_listed() {
    let allowed = upstream("127.0.0.1:0", 5).await;
    let other = upstream("127.0.0.1:0", 6).await;
    let sandbox = allowing(allowed.port, &[]);
    let code = format!(
        r#"{fetch}
import socket
# A tunnel by hand: CONNECT, then plain HTTP inside it.
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
answer = s.recv(4096)
print("connect", answer.split(b"\r\n")[0])
s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
got = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print("tunnel", got.split(b"\r\n")[0], got.endswith(b"xxxxx"))
c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
c.request("GET", "http://127.0.0.1:{other}/")
r = c.getresponse()
print("other", r.status, r.read())
"#,
        fetch = fetch(allowed.port),
        port = allowed.port,
        other = other.port,
    );
    let result = run(&sandbox, &code).await;
    let out = result.stdout.as_str();
    assert!(
        out.contains("status 200 length 5"),
        "{out}\n{}",
        result.stderr.as_str()
    );
    assert!(out.contains("connect b'HTTP/1.1 200 OK'"), "{out}");
    assert!(out.contains("tunnel b'HTTP/1.1 200 OK' True"), "{out}");
    assert!(out.contains("other 403"), "{out}");
    assert!(out.contains("not in the allowlist"), "{out}");
    assert!(
        out.contains("--allow-host"),
        "the 403 says how to allow it: {out}"
    );
    assert_eq!(
        other.accepted.load(Ordering::SeqCst),
        0,
        "the refused upstream saw nothing"
    );
    assert_eq!(allowed.accepted.load(Ordering::SeqCst), 2);
    let egress = result.egress.expect("an allowlist reports egress");
    let reached = entry(&egress, "127.0.0.1", allowed.port, Verdict::Allowed);
    assert_eq!(reached.connections, 2, "{egress:?}");
    assert!(
        reached.bytes_sent > 0 && reached.bytes_received > 10,
        "{egress:?}"
    );
    let refused = entry(&egress, "127.0.0.1", other.port, Verdict::Blocked);
    assert_eq!(refused.reason.as_deref(), Some("not in the allowlist"));
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn nothing_but_the_proxy_leads_anywhere() {
    // Listening on every address of the host: a route to the host would reach it.
    let open = upstream("0.0.0.0:0", 5).await;
    let sandbox = allowing(open.port, &[]);
    let code = format!(
        r#"
import socket
print("resolv", [l for l in open("/etc/resolv.conf").read().splitlines() if l.startswith("nameserver")])
try:
    print("dns", socket.getaddrinfo("example.com", 443))
except OSError as e:
    print("dns failed", type(e).__name__)
def tcp(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(addr)
        return "CONNECTED"
    except OSError as e:
        return "failed " + type(e).__name__
    finally:
        s.close()
for host in ["172.17.0.1", "10.255.255.53", "1.1.1.1", "169.254.169.254"]:
    print("raw", host, tcp(socket.AF_INET, (host, {port})))
print("raw6", tcp(socket.AF_INET6, ("2001:db8::1", {port})))
print("raw6-mapped", tcp(socket.AF_INET6, ("::ffff:172.17.0.1", {port})))
print("loopback other port", tcp(socket.AF_INET, ("127.0.0.1", 3129)))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
for server in ["172.17.0.1", "127.0.0.11", "10.255.255.53"]:
    try:
        u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", (server, 53))
        print("udp", server, "answered", u.recv(512)[:2])
    except OSError as e:
        print("udp", server, "failed", type(e).__name__)
"#,
        port = open.port
    );
    let result = run(&sandbox, &code).await;
    let out = result.stdout.as_str();
    assert!(out.contains("resolv []"), "no nameserver: {out}");
    assert!(out.contains("dns failed"), "{out}");
    assert!(!out.contains("CONNECTED"), "a way around the proxy: {out}");
    assert!(!out.contains("answered"), "a DNS answer: {out}");
    assert_eq!(
        out.matches("raw").count(),
        6,
        "{out}\n{}",
        result.stderr.as_str()
    );
    assert_eq!(open.accepted.load(Ordering::SeqCst), 0);
    // Nothing of it reached the proxy either.
    assert_eq!(result.egress, Some(Vec::new()));
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_download_past_the_byte_limit_is_cut_reported_and_the_call_gets_no_more() {
    let big = upstream("127.0.0.1:0", 8 << 20).await;
    let sandbox = allowing(big.port, &["--egress-max-bytes", "1m"]);
    let code = format!(
        r#"
import http.client
def get():
    c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
    c.request("GET", "http://127.0.0.1:{port}/")
    r = c.getresponse()
    got = 0
    try:
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            got += len(chunk)
    except Exception as e:
        print("cut", type(e).__name__)
    return r.status, got
print("first", get())
print("second", get())
"#,
        port = big.port
    );
    let result = run(&sandbox, &code).await;
    let out = result.stdout.as_str();
    let first: Vec<&str> = out.lines().filter(|l| l.starts_with("first")).collect();
    assert_eq!(first.len(), 1, "{out}\n{}", result.stderr.as_str());
    let got: u64 = first[0]
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        got < (1 << 20) + (256 << 10),
        "{got} bytes passed a 1 MiB limit"
    );
    assert!(
        out.contains("second (403"),
        "no new connection once spent: {out}"
    );
    let egress = result.egress.unwrap();
    let cut = entry(&egress, "127.0.0.1", big.port, Verdict::Allowed);
    assert_eq!(cut.reason.as_deref(), Some(CUT), "{egress:?}");
    assert!(cut.bytes_sent + cut.bytes_received <= 1 << 20, "{egress:?}");
    let refused = entry(&egress, "127.0.0.1", big.port, Verdict::Blocked);
    assert!(
        refused.reason.as_deref().unwrap().contains("spent"),
        "{egress:?}"
    );
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_thousand_connections_at_once_stay_bounded_and_another_call_goes_on() {
    let slow = upstream("127.0.0.1:0", 5).await;
    let sandbox = allowing(slow.port, &["--concurrency", "2"]);
    let flood = format!(
        r#"
import socket, time
held, failed = [], 0
for i in range(1000):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(s)
    except OSError:
        failed += 1
answers = {{}}
for s in held:
    s.settimeout(5)
    try:
        line = s.recv(64).split(b"\r\n")[0]
    except OSError as e:
        line = type(e).__name__.encode()
    answers[line] = answers.get(line, 0) + 1
print("held", len(held), "failed", failed)
print("answers", sorted(answers.items(), key=lambda kv: -kv[1])[:4])
"#,
        port = slow.port
    );
    let before = rss_bytes();
    let flooding = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { run(&sandbox, &flood).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = run(&sandbox, &fetch(slow.port)).await;
    assert!(
        other.stdout.as_str().contains("status 200 length 5"),
        "another call is unaffected: {}\n{}",
        other.stdout.as_str(),
        other.stderr.as_str()
    );
    let flooded = flooding.await.unwrap();
    let out = flooded.stdout.as_str();
    assert!(
        out.contains("answers"),
        "{out}\n{}",
        flooded.stderr.as_str()
    );
    let egress = flooded.egress.unwrap();
    // At most --egress-max-connections (64) open at once: the next ones are refused with the
    // reason, and the runner's relay closes what is past its own 128 pairs.
    let allowed = entry(&egress, "127.0.0.1", slow.port, Verdict::Allowed);
    assert!(allowed.connections < 1000, "{egress:?}");
    let capped = entry(&egress, "127.0.0.1", slow.port, Verdict::Blocked);
    assert!(
        capped
            .reason
            .as_deref()
            .unwrap()
            .contains("too many connections"),
        "{egress:?}"
    );
    assert!(out.contains("b'HTTP/1.1 403 Forbidden'"), "{out}");
    assert!(
        rss_bytes() < before + (200 << 20),
        "the server's memory grew by {} MiB",
        (rss_bytes().saturating_sub(before)) >> 20
    );
    assert_no_containers(&sandbox).await;
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn each_session_call_reports_its_own_egress() {
    let up = upstream("127.0.0.1:0", 5).await;
    let sandbox = allowing(up.port, &[]);
    let id = sandbox
        .create_session(None, &CancellationToken::new())
        .await
        .expect("a session opens")
        .session_id;
    let call = async |code: &str| {
        sandbox
            .execute_in_session(
                &id,
                None,
                &ExecutionRequest::new(code),
                &CancellationToken::new(),
                &|_, _| {},
            )
            .await
            .expect("a session call")
            .result
    };
    let first = call(&fetch(up.port)).await;
    let second = call(&format!("{0}\n{0}", fetch(up.port))).await;
    let third = call("print('no network')").await;
    let connections =
        |egress: &[Attempt]| entry(egress, "127.0.0.1", up.port, Verdict::Allowed).connections;
    assert_eq!(
        connections(first.egress.as_deref().unwrap()),
        1,
        "{first:?}"
    );
    assert_eq!(
        connections(second.egress.as_deref().unwrap()),
        2,
        "{second:?}"
    );
    assert_eq!(third.egress, Some(Vec::new()));
    sandbox.close_session(&id, None).unwrap();
    wait_for_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_warm_container_has_its_way_out_and_each_socket_folder_goes_with_its_container() {
    let up = upstream("127.0.0.1:0", 5).await;
    let pattern = format!("127.0.0.1:{}", up.port);
    let sandbox = sandbox_with(&["--allow-host", &pattern, "--pool-size", "1"]);
    sandbox.start_pool();
    for _ in 0..100 {
        if sandbox.pool_ready() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sandbox.pool_ready(), 1, "the pool fills");
    for _ in 0..2 {
        let result = run(&sandbox, &fetch(up.port)).await;
        assert!(result.stdout.as_str().contains("status 200"), "{result:?}");
    }
    sandbox.shutdown(Duration::from_secs(10)).await;
    assert_no_containers(&sandbox).await;
    assert_eq!(socket_folders(&sandbox), Vec::<String>::new());
}

#[tokio::test]
async fn a_socket_folder_left_by_a_killed_server_is_removed_by_the_next() {
    // A killed server's folder: its socket file stays, and nobody listens on it.
    let base = egress_base();
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&base)
        .unwrap();
    let dead = base.join(format!("deadbeef{}-0", std::process::id()));
    std::fs::create_dir_all(&dead).unwrap();
    drop(std::os::unix::net::UnixListener::bind(dead.join("proxy.sock")).unwrap());
    let up = upstream("127.0.0.1:0", 5).await;
    let sandbox = allowing(up.port, &[]);
    let result = run(&sandbox, &fetch(up.port)).await;
    assert!(result.stdout.as_str().contains("status 200"), "{result:?}");
    assert!(!dead.exists(), "the dead server's folder is still there");
    assert_no_containers(&sandbox).await;
}

fn egress_base() -> std::path::PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("mcp-python-executor-{uid}/egress"))
}

/// The socket folders of `sandbox`'s containers still on disk.
fn socket_folders(sandbox: &Sandbox) -> Vec<String> {
    std::fs::read_dir(egress_base())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(sandbox.instance()))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_no_containers(sandbox: &Sandbox) {
    for _ in 0..200 {
        if containers_of(sandbox).await.is_empty() && socket_folders(sandbox).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "left behind: {:?} {:?}",
        containers_of(sandbox).await,
        socket_folders(sandbox)
    );
}
