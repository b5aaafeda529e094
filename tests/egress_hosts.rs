//! Egress to test hosts by name, over MCP through the built binary (`make test-engines`: root,
//! `ip`, `openssl`, `unshare`). Each test makes a network namespace of its own with a veth pair
//! (10.251.K.1 here, 10.251.K.2 there; `tests/common/netns.rs`, shared with `tests/secrets.rs`)
//! and runs an HTTP server (port 80) and an HTTPS server (443, a certificate the test makes) in
//! it, so the allowed host is not this machine's loopback; nothing is sent anywhere else. The
//! server under test runs in a mount namespace of its own whose /etc/hosts names the test hosts
//! (`allowed.test` and `other.test` lead to the namespace, `loop.test` to 127.0.0.1, `meta.test`
//! to 169.254.169.254): real names, resolved by the proxy through the system's resolver.
//!
//! The attacks: a name not listed, a port not listed, names that lead to loopback, a private
//! network or the metadata endpoint, a tunnel whose ClientHello names another host (the
//! certificate is valid for both, so only the proxy's check stops it), a plain request whose
//! `Host` disagrees with its URL.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use common::netns::{Netns, with_hosts_file};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

/// A test host: a network namespace with a veth pair, an HTTP and an HTTPS server, and the
/// files they serve. Removed (servers killed, namespace deleted) when dropped.
struct TestHost {
    netns: Netns,
    ca: String,
}

/// Serves `dir` over HTTP on 80 and HTTPS on 443 at the address given.
const SERVERS: &str = r#"
import functools, http.server, ssl, sys, threading
addr, directory, cert, key = sys.argv[1:5]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
plain = Server((addr, 80), handler)
tls = Server((addr, 443), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
tls.socket = context.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
print("serving", flush=True)
plain.serve_forever()
"#;

impl TestHost {
    fn start() -> Self {
        let mut netns = Netns::claim("eg");
        let dir = &netns.dir;
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello from the test host\n").unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=allowed.test"])
            .args([
                "-addext",
                "subjectAltName=DNS:allowed.test,DNS:other.test,DNS:private.test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(made.success(), "openssl makes a certificate");
        let ca = std::fs::read_to_string(&cert).unwrap();
        netns.serve(SERVERS, [&www, &cert, &key]);
        Self { netns, ca }
    }

    /// The /etc/hosts the server under test sees.
    fn hosts_file(&self) -> PathBuf {
        let path = self.netns.dir.join("hosts");
        let addr = &self.netns.addr;
        let own = addr.rsplit_once('.').unwrap().0;
        std::fs::write(
            &path,
            format!(
                "127.0.0.1 localhost\n{addr} allowed.test other.test private.test\n\
                 127.0.0.1 loop.test\n169.254.169.254 meta.test\n{own}.1 own.test\n",
            ),
        )
        .unwrap();
        path
    }

    /// The binary, serving MCP on stdio in a mount namespace whose /etc/hosts is
    /// [`TestHost::hosts_file`], with these `PYEXEC_*` settings.
    async fn server(&self, env: &[(&str, &str)]) -> RunningService<RoleClient, ()> {
        let hosts = self.hosts_file();
        let mut command = with_hosts_file(&hosts, BINARY);
        command
            .env("PYEXEC_POOL_SIZE", "0")
            .stderr(Stdio::null())
            .envs(env.iter().copied());
        let transport =
            TokioChildProcess::new(tokio::process::Command::from(command)).expect("server starts");
        ().serve(transport).await.expect("MCP handshake")
    }
}

async fn call(client: &RunningService<RoleClient, ()>, code: &str) -> CallToolResult {
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({ "code": code }).as_object().unwrap().clone());
    tokio::time::timeout(Duration::from_secs(120), client.call_tool(params))
        .await
        .expect("answered in time")
        .expect("tools/call answered")
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The answer's egress entry for `host:port` with `verdict`.
fn entry(result: &CallToolResult, host: &str, port: u16, verdict: &str) -> Value {
    let egress = &result.structured_content.as_ref().expect("structured")["egress"];
    egress
        .as_array()
        .expect("an egress list")
        .iter()
        .find(|e| e["host"] == host && e["port"] == port && e["verdict"] == verdict)
        .unwrap_or_else(|| panic!("no {verdict} entry for {host}:{port} in {egress}"))
        .clone()
}

/// Python that defines `CA` (the test host's certificate) and `get(url)`: urllib with the
/// proxy the environment names, printing what came back or why not.
fn prelude(host: &TestHost) -> String {
    format!(
        r#"
import socket, ssl, urllib.error, urllib.request
CA = """{ca}"""
context = ssl.create_default_context(cadata=CA)
def get(url):
    try:
        body = urllib.request.urlopen(url, timeout=20, context=context).read()
        return "ok %r" % body
    except urllib.error.HTTPError as e:
        return "http %d %r" % (e.code, e.read())
    except Exception as e:
        return "failed %r" % (e,)
def tunnel(name, port, hello_name):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (name.encode(), port, name.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        return "refused %r" % head.split(b"\r\n")[0]
    try:
        t = context.wrap_socket(s, server_hostname=hello_name)
        t.sendall(b"GET /index.html HTTP/1.0\r\nHost: %s\r\n\r\n" % hello_name.encode())
        got = b""
        while True:
            chunk = t.recv(4096)
            if not chunk:
                break
            got += chunk
        return "ok %r" % got.split(b"\r\n\r\n", 1)[-1]
    except Exception as e:
        return "failed %r" % (e,)
"#,
        ca = host.ca
    )
}

#[tokio::test]
async fn an_allowed_name_is_reached_over_http_and_https_and_the_rest_gets_a_reason() {
    let host = TestHost::start();
    let client = host
        .server(&[
            ("PYEXEC_ALLOW_HOSTS", "allowed.test"),
            // The test host is on a private network (10.251/16), as a company's API would be.
            ("PYEXEC_EGRESS_ALLOW_PRIVATE", "true"),
        ])
        .await;
    let code = format!(
        r#"{prelude}
print("http", get("http://allowed.test/index.html"))
print("https", get("https://allowed.test/index.html"))
print("by hand", tunnel("allowed.test", 443, "allowed.test"))
print("unlisted", get("http://unlisted.test/"))
print("port", get("https://allowed.test:8443/"))
print("other", get("http://other.test/index.html"))
"#,
        prelude = prelude(&host)
    );
    let result = call(&client, &code).await;
    let out = text(&result);
    let hello = "b'hello from the test host\\n'";
    assert!(out.contains(&format!("http ok {hello}")), "{out}");
    assert!(out.contains(&format!("https ok {hello}")), "{out}");
    assert!(out.contains(&format!("by hand ok {hello}")), "{out}");
    assert!(out.contains("unlisted http 403"), "{out}");
    assert!(
        out.contains("unlisted.test:80: not in the allowlist"),
        "{out}"
    );
    assert!(out.contains("--allow-host"), "{out}");
    assert!(out.contains("port failed") && out.contains("403"), "{out}");
    assert!(out.contains("other http 403"), "{out}");
    assert!(
        out.contains("egress: allowed.test:80 allowed"),
        "the text's line: {out}"
    );
    let http = entry(&result, "allowed.test", 80, "allowed");
    assert_eq!(http["connections"], 1);
    assert!(http["bytes_received"].as_u64().unwrap() > 25, "{http}");
    assert_eq!(
        entry(&result, "allowed.test", 443, "allowed")["connections"],
        2
    );
    for (name, port) in [
        ("unlisted.test", 80),
        ("allowed.test", 8443),
        ("other.test", 80),
    ] {
        let refused = entry(&result, name, port, "blocked");
        assert_eq!(refused["reason"], "not in the allowlist", "{refused}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn names_leading_to_this_machine_a_private_network_or_the_metadata_endpoint_are_refused() {
    let host = TestHost::start();
    let code = format!(
        r#"{prelude}
for name in ["loop.test", "private.test", "meta.test", "own.test"]:
    print(name, get("http://%s/index.html" % name))
"#,
        prelude = prelude(&host)
    );
    let listed = (
        "PYEXEC_ALLOW_HOSTS",
        "loop.test, private.test, meta.test, own.test",
    );
    let strict = host.server(&[listed]).await;
    let result = call(&strict, &code).await;
    let out = text(&result);
    for (name, why) in [
        ("loop.test", "resolves to 127.0.0.1, a loopback address"),
        ("private.test", "a private address"),
        ("meta.test", "169.254.169.254, a link-local address"),
    ] {
        assert!(out.contains(&format!("{name} http 403")), "{out}");
        let refused = entry(&result, name, 80, "blocked");
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
    }
    strict.cancel().await.unwrap();
    // Private networks allowed: the company API by name is reached, the host and the
    // metadata endpoint still are not.
    let open = host
        .server(&[listed, ("PYEXEC_EGRESS_ALLOW_PRIVATE", "true")])
        .await;
    let result = call(&open, &code).await;
    let out = text(&result);
    assert!(
        out.contains("private.test ok b'hello from the test host"),
        "{out}"
    );
    assert!(out.contains("loop.test http 403"), "{out}");
    assert!(out.contains("meta.test http 403"), "{out}");
    // The host's own end of the veth is private, and the machine's: refused all the same.
    assert!(out.contains("own.test http 403"), "{out}");
    let own = entry(&result, "own.test", 80, "blocked");
    assert!(
        own["reason"]
            .as_str()
            .unwrap()
            .contains("an address of this machine"),
        "{own}"
    );
    open.cancel().await.unwrap();
}

#[tokio::test]
async fn a_tunnel_whose_client_hello_names_another_host_gets_nothing() {
    let host = TestHost::start();
    let client = host
        .server(&[
            ("PYEXEC_ALLOW_HOSTS", "allowed.test"),
            ("PYEXEC_EGRESS_ALLOW_PRIVATE", "true"),
        ])
        .await;
    // The certificate is valid for other.test too: only the proxy's check can stop this.
    let code = format!(
        r#"{prelude}
print("fronted", tunnel("allowed.test", 443, "other.test"))
print("honest", tunnel("allowed.test", 443, "allowed.test"))
"#,
        prelude = prelude(&host)
    );
    let result = call(&client, &code).await;
    let out = text(&result);
    assert!(out.contains("fronted failed"), "{out}");
    assert!(
        out.contains("honest ok b'hello from the test host"),
        "{out}"
    );
    let refused = entry(&result, "allowed.test", 443, "blocked");
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("asks for other.test"), "{reason}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_plain_request_whose_host_header_disagrees_with_its_url_is_refused() {
    let host = TestHost::start();
    let client = host
        .server(&[
            ("PYEXEC_ALLOW_HOSTS", "allowed.test"),
            ("PYEXEC_EGRESS_ALLOW_PRIVATE", "true"),
        ])
        .await;
    let code = r#"
import socket
def ask(host_header):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"GET http://allowed.test/index.html HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host_header)
    got = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.split(b"\r\n")[0], got.rsplit(b"\r\n\r\n", 1)[-1][:80]
print("disagrees", ask(b"other.test"))
print("agrees", ask(b"allowed.test"))
"#;
    let result = call(&client, code).await;
    let out = text(&result);
    assert!(
        out.contains("disagrees (b'HTTP/1.1 403 Forbidden'"),
        "{out}"
    );
    assert!(
        out.contains("agrees (b'HTTP/1.0 200 OK'"),
        "the test host speaks HTTP/1.0: {out}"
    );
    let refused = entry(&result, "allowed.test", 80, "blocked");
    assert_eq!(refused["reason"], "the Host header names another host");
    client.cancel().await.unwrap();
}
