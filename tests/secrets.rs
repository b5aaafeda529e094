//! Secrets injected by the egress proxy, over MCP through the built binary, with real TLS to
//! test hosts by name (`make test-engines`: root, `ip`, `openssl`, `unshare`). The machinery is
//! `tests/egress_hosts.rs`'s, shared in `tests/common/netns.rs`: a network namespace per test
//! with a veth pair (10.251.K.1 here, 10.251.K.2 there; the same `pyexec-egK` names, so the two
//! files never take the same K), the server under test in a mount namespace of its own whose
//! /etc/hosts leads `bound.test`, `other.test` and `unbound.test` there. The test host speaks
//! HTTP on 80 and HTTPS on 443 with a certificate from a CA the test makes; the server trusts
//! that CA through its `SSL_CERT_FILE`, the program only the proxy's own CA
//! (`/run/pyexec-egress/ca.pem`).
//!
//! The host hashes what it receives (`/hash`), echoes it back (`/echo`, `/drip`), and appends
//! every byte it is sent to a log this file reads, so each test can say that the value reached
//! `bound.test` and nothing else, and never print the value doing so. The server runs at
//! `RUST_LOG=trace` with its stderr kept: the value must not be in that either.
//!
//! The attacks: the placeholder sent to a host it is not bound to (in a header, the query, in
//! upper case, to another secret's host, over plain HTTP to its own host, in a header name, in a
//! `CONNECT`); obs-fold lines, a placeholder in two halves, in a chunked body; a bound name
//! spelled `BOUND.TEST.`; a second ClientHello, an HTTP/2 preface and ALPN `h2` inside the
//! intercepted TLS; `Content-Length` with `Transfer-Encoding`; a `Host` or absolute URL naming
//! another host inside the bound host's tunnel.

mod common;

use std::cell::Cell;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::netns::{Netns, with_hosts_file};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

/// The secret the tests bind to `bound.test` (the server's variable of that name holds it).
const NAME: &str = "API_TOKEN";
/// The CA bundle the containers are told to trust.
const CA_BUNDLE: &str = "/run/pyexec-egress/ca.pem";

/// A value no one has seen: `sk-test-` and 32 random hex digits.
fn fresh_value() -> String {
    format!("sk-test-{}", uuid::Uuid::new_v4().simple())
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `^pyexec_[0-9a-f]{48}$`
fn is_placeholder(text: &str) -> bool {
    text.strip_prefix("pyexec_").is_some_and(|hex| {
        hex.len() == 48
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A test host: a network namespace with a veth pair and the server below in it, its
/// certificates and its log. Removed (server killed, namespace deleted) when dropped.
struct TestHost {
    netns: Netns,
    /// Servers under test started so far (each has its own stderr file).
    started: Cell<u32>,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    let done = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(done.success(), "openssl {args:?}");
}

/// HTTP on 80 and HTTPS on 443 at the address given. Every byte a connection sends is logged,
/// one JSON line per request (or per leftover that is not one): `{port, sni, data}` (`data`
/// read as Latin-1). `/hash` answers the SHA-256 of `Authorization`, `X-Api-Key` and the
/// query's `key`; `/echo` the request head as received, with `X-Echo: <Authorization>`;
/// `/drip` the `Authorization` value, one byte per chunk; `/forms` its token as the reason
/// phrase and as a header's name, and in the body upper-cased and percent-encoded; anything
/// else `recorded`.
const SERVERS: &str = r#"
import hashlib, json, socket, ssl, sys, threading, urllib.parse
addr, cert, key, log = sys.argv[1:5]
lock = threading.Lock()

def record(port, sni, data):
    if data:
        with lock, open(log, "a") as f:
            f.write(json.dumps({"port": port, "sni": sni, "data": data.decode("latin-1")}) + "\n")

def sha(v):
    return None if v is None else hashlib.sha256(v.encode("latin-1")).hexdigest()

class Conn:
    def __init__(self, sock, port, sni):
        self.f, self.port, self.sni, self.seen = sock.makefile("rb"), port, sni, b""
        self.sock = sock
    def line(self):
        got = self.f.readline(65536)
        self.seen += got
        return got
    def read(self, n):
        got = self.f.read(n)
        self.seen += got
        return got
    def flush(self):
        record(self.port, self.sni, self.seen)
        self.seen = b""

def serve(c):
    while True:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = c.line()
            if not line:
                return
            head += line
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for h in lines[1:]:
            name, _, value = h.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(c.line().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while c.line() not in (b"\r\n", b""):
                        pass
                    break
                c.read(size + 2)
        elif headers.get("content-length", "").isdigit():
            c.read(int(headers["content-length"]))
        c.flush()
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        auth = headers.get("authorization")
        extra, chunked, reason = "", None, "OK"
        if path == "/hash":
            body = json.dumps({"authorization": sha(auth), "x-api-key": sha(headers.get("x-api-key")),
                               "key": sha(query.get("key", [None])[0])}).encode()
        elif path == "/echo":
            body, extra = head, "X-Echo: %s\r\n" % (auth or "")
        elif path == "/drip":
            chunked = (auth or "").encode("latin-1")
        elif path == "/forms":
            token = (auth or "none").split()[-1]
            reason, extra = token, "%s: named\r\n" % token
            body = ("%s %s" % ((auth or "").upper(), urllib.parse.quote(auth or "", safe=""))).encode()
        else:
            body = b"recorded\n"
        close = headers.get("connection", "").lower() == "close"
        answer = "HTTP/1.1 200 %s\r\n%s%s" % (reason, extra, "Connection: close\r\n" if close else "")
        if chunked is None:
            c.sock.sendall(("%sContent-Length: %d\r\n\r\n" % (answer, len(body))).encode("latin-1") + body)
        else:
            c.sock.sendall(("%sTransfer-Encoding: chunked\r\n\r\n" % answer).encode("latin-1")
                           + b"".join(b"1\r\n%c\r\n" % b for b in chunked) + b"0\r\n\r\n")
        if close:
            return

def handle(sock, port, context):
    sni = None
    try:
        sock.settimeout(30)
        if context:
            sock = context.wrap_socket(sock, server_side=True)
            sni = getattr(sock, "sni", None)
        c = Conn(sock, port, sni)
        try:
            serve(c)
        finally:
            c.flush()
    except Exception:
        pass
    finally:
        try:
            sock.close()
        except Exception:
            pass

def listen(port, context):
    s = socket.create_server((addr, port), reuse_port=False)
    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=handle, args=(conn, port, context), daemon=True).start()
    return threading.Thread(target=loop, daemon=True)

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
def sni(sock, name, _):
    sock.sni = name
context.sni_callback = sni
servers = [listen(80, None), listen(443, context)]
for t in servers:
    t.start()
print("serving", flush=True)
for t in servers:
    t.join()
"#;

impl TestHost {
    fn start() -> Self {
        let mut netns = Netns::claim("sec");
        let dir = &netns.dir;
        // A CA (what the server trusts upstream) and the host's certificate from it: a
        // self-signed leaf with CA:TRUE is refused as an end entity by webpki.
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=pyexec secrets test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=bound.test",
                "-keyout",
                "key.pem",
                "-out",
                "cert.csr",
            ],
        );
        std::fs::write(
            dir.join("cert.ext"),
            "subjectAltName=DNS:bound.test,DNS:other.test,DNS:unbound.test\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "cert.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "0x5ec7e7",
                "-days",
                "1",
                "-extfile",
                "cert.ext",
                "-out",
                "cert.pem",
            ],
        );
        let files = ["cert.pem", "key.pem", "requests.log"].map(|name| dir.join(name));
        netns.serve(SERVERS, files);
        Self {
            netns,
            started: Cell::new(0),
        }
    }

    /// The /etc/hosts the server under test sees.
    fn hosts_file(&self) -> PathBuf {
        let path = self.netns.dir.join("hosts");
        std::fs::write(
            &path,
            format!(
                "127.0.0.1 localhost\n{} bound.test other.test unbound.test\n",
                self.netns.addr
            ),
        )
        .unwrap();
        path
    }

    /// The binary, serving MCP on stdio in a mount namespace whose /etc/hosts is
    /// [`TestHost::hosts_file`], trusting the test CA upstream, logging at trace level to a
    /// file of this host's, with these arguments and settings.
    async fn server(&self, args: &[&str], env: &[(&str, &str)]) -> RunningService<RoleClient, ()> {
        let hosts = self.hosts_file();
        let n = self.started.get();
        self.started.set(n + 1);
        let log = std::fs::File::create(self.netns.dir.join(format!("server-{n}.log"))).unwrap();
        let mut command = with_hosts_file(&hosts, BINARY);
        command
            .args(args)
            .env("PYEXEC_POOL_SIZE", "0")
            .env("PYEXEC_TIMEOUT", "100")
            // The test host is on a private network (10.251/16), as a company's API would be.
            .env("PYEXEC_EGRESS_ALLOW_PRIVATE", "true")
            .env("SSL_CERT_FILE", self.netns.dir.join("ca.pem"))
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied());
        // The builder's stderr: `TokioChildProcess::new` makes the child's inherit ours.
        let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(command))
            .stderr(log)
            .spawn()
            .expect("server starts");
        ().serve(transport).await.expect("MCP handshake")
    }

    /// [`TestHost::server`] with `API_TOKEN` (holding `value`) bound to `bound.test` by
    /// `PYEXEC_SECRETS`, and `unbound.test` allowed.
    async fn bound_server(&self, value: &str) -> RunningService<RoleClient, ()> {
        self.server(
            &[],
            &[
                ("PYEXEC_SECRETS", "API_TOKEN=bound.test"),
                ("PYEXEC_ALLOW_HOSTS", "unbound.test"),
                (NAME, value),
            ],
        )
        .await
    }

    /// What the host was sent: `{port, sni, data}` per request.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.netns.dir.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Ends `client` and checks that no server this host started logged `value`.
    async fn finish(&self, client: RunningService<RoleClient, ()>, value: &str) {
        client.cancel().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.assert_logs_lack(value);
    }

    fn assert_logs_lack(&self, value: &str) {
        for n in 0..self.started.get() {
            let log = std::fs::read(self.netns.dir.join(format!("server-{n}.log"))).unwrap();
            let log = String::from_utf8_lossy(&log);
            assert!(
                log.contains("egress"),
                "server {n} logged at trace level ({} bytes)",
                log.len()
            );
            assert!(
                !log.contains(value),
                "server {n}'s log holds the value (at byte {:?})",
                log.find(value)
            );
        }
    }
}

async fn call(client: &RunningService<RoleClient, ()>, code: &str) -> CallToolResult {
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({ "code": code }).as_object().unwrap().clone());
    tokio::time::timeout(Duration::from_secs(180), client.call_tool(params))
        .await
        .expect("answered in time")
        .expect("tools/call answered")
}

/// The answer's text, once it is known to hold nothing of `value` (the whole answer,
/// structured content included), so it may be printed.
fn text_without(result: &CallToolResult, value: &str) -> String {
    let whole = serde_json::to_string(result).unwrap().to_ascii_uppercase();
    assert!(
        !whole.contains(&value.to_ascii_uppercase()),
        "the answer holds the value (in some letter case)"
    );
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

/// The JSON the program printed as `CASE <name> <json>`.
fn case(out: &str, name: &str) -> Value {
    let prefix = format!("CASE {name} ");
    let line = out
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no case {name:?} in:\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("case {name:?}: {e}: {line}"))
}

/// The program's placeholder, as it printed it with `case("placeholder", {"value": PH})`.
fn placeholder(out: &str) -> String {
    case(out, "placeholder")["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn status(case: &Value) -> &str {
    case["status"].as_str().unwrap_or_default()
}

/// A case refused by the proxy or closed: a 400 answer or the connection closed, never a
/// hang and never an answer from the host.
fn assert_refused_or_closed(out: &str, name: &str) {
    let got = case(out, name);
    let s = status(&got);
    assert!(
        s == "closed" || s.starts_with("HTTP/1.1 400") || s.starts_with("HTTP/1.0 400"),
        "{name}: {got}"
    );
}

/// A response header of a `get` case, whatever the case of its name.
fn header(case: &Value, name: &str) -> String {
    let headers = case["headers"].as_object().expect("headers");
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {name} in {case}"))
        .to_string()
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

/// Python for the program: `PH` (its placeholder), `P` (as bytes), `case(name, result)`, and
/// through the proxy at 127.0.0.1:3128, each answering `{status, headers, body}` or a
/// `{status: "closed" | "timeout" | "error …"}`:
/// `get(url, headers)` (urllib, default context), `raw(host, data, …)` (a `CONNECT`, TLS with
/// the default context, then `data` as it is), `plain(data)` (`data` to the proxy as it is),
/// `req(target, …)` (a request's bytes) and `client_hello(name)` (a ClientHello's bytes).
const PRELUDE: &str = r#"
import hashlib, json, os, re, socket, ssl, urllib.error, urllib.request
PH = os.environ.get("API_TOKEN", "")
P = PH.encode()
context = ssl.create_default_context()
def case(name, result):
    print("CASE", name, json.dumps(result), flush=True)
def get(url, headers={}):
    request = urllib.request.Request(url, headers=headers)
    try:
        r = urllib.request.urlopen(request, timeout=20)
        return {"status": r.status, "headers": dict(r.headers), "body": r.read().decode("latin-1")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "headers": dict(e.headers), "body": e.read().decode("latin-1")}
    except Exception as e:
        return {"status": "error %r" % (e,)}
def read_head(s):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        c = s.recv(1)
        if not c:
            break
        head += c
    return head
def answer(s, head=None):
    try:
        head = read_head(s) if head is None else head
        if not head:
            return {"status": "closed"}
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head)
        body = b""
        while m is None or len(body) < int(m.group(1)):
            if chunked and body.endswith(b"0\r\n\r\n"):
                break
            c = s.recv(65536)
            if not c:
                break
            body += c
        if chunked:
            body = dechunk(body)
        return {"status": head.split(b"\r\n")[0].decode("latin-1"), "head": head.decode("latin-1"),
                "body": body.decode("latin-1")}
    except socket.timeout:
        return {"status": "timeout"}
    except (ConnectionError, ssl.SSLError, OSError) as e:
        return {"status": "closed", "why": repr(e)}
def dechunk(data):
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0].strip() or b"0", 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2:]
    return out
def req(target, host=b"bound.test", headers=b"", method=b"GET", body=b""):
    return (method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + headers
            + b"Connection: close\r\n\r\n" + body)
def raw(host, data, sni=None, connect_headers=b"", alpn=None):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    try:
        s.sendall(b"CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n%s\r\n" % (host, host, connect_headers))
        head = read_head(s)
        if not head.startswith(b"HTTP/1.1 200"):
            got = answer(s, head)
            got["status"] = "refused " + got["status"]
            return got
        ctx = context
        if alpn:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(alpn)
        t = ctx.wrap_socket(s, server_hostname=sni or host.decode())
        got = {"alpn": t.selected_alpn_protocol()}
        try:
            t.sendall(data)
        except OSError:
            pass
        got.update(answer(t))
        return got
    except Exception as e:
        return {"status": "error %r" % (e,)}
    finally:
        s.close()
def plain(data):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    try:
        s.sendall(data)
        return answer(s)
    finally:
        s.close()
def client_hello(name):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
"#;

#[tokio::test]
async fn the_bound_host_gets_the_value_and_the_program_only_its_placeholder() {
    let host = TestHost::start();
    let value = fresh_value();
    let client = host.bound_server(&value).await;
    // The scan looks for anything shaped like the value and compares hashes only; a decoy of
    // the same shape, written to /tmp, shows that it would find one.
    let code = format!(
        r#"{PRELUDE}
case("env", {{k: os.environ.get(k) for k in ["API_TOKEN", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"]}})
case("ca", {{"certificates": open("{CA_BUNDLE}").read().count("BEGIN CERTIFICATE")}})
case("hash", get("https://bound.test/hash?key=" + PH, {{"Authorization": "Bearer " + PH, "X-Api-Key": PH}}))
case("unbound", get("http://unbound.test/record"))
# A client that trusts only certifi's list (httpx does): certifi answers the proxy's bundle.
os.makedirs("/tmp/certifi", exist_ok=True)
open("/tmp/certifi/__init__.py", "w").write("def where():\n    return '/nowhere.pem'\n")
import certifi
with_certifi = ssl.create_default_context(cafile=certifi.where())
answer = urllib.request.urlopen(urllib.request.Request("https://bound.test/hash",
    headers={{"Authorization": "Bearer " + PH}}), context=with_certifi, timeout=20)
case("certifi", {{"where": certifi.where(), "body": answer.read().decode()}})
import glob
WANT, DECOY = "{want}", "sk-test-" + "0" * 32
open("/tmp/decoy", "w").write("x=" + DECOY + "\n")
shape = re.compile(rb"sk-test-[0-9a-f]{{32}}")
found, decoys, scanned = [], [], 0
paths = glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")
for root in ["/run", "/tmp", "/etc", "/home", "/var", "/opt/venv/bin"]:
    for d, dirs, files in os.walk(root):
        paths += [os.path.join(d, f) for f in files]
for p in paths:
    try:
        with open(p, "rb") as f:
            data = f.read(8 << 20)
    except OSError:
        continue
    scanned += 1
    for m in set(shape.findall(data)):
        if hashlib.sha256(m).hexdigest() == WANT:
            found.append(p)
        if m == DECOY.encode():
            decoys.append(p)
env = "\n".join(os.environ.values()).encode()
case("scan", {{"scanned": scanned, "found": found, "decoys": decoys,
              "in_environ": any(hashlib.sha256(m).hexdigest() == WANT for m in shape.findall(env))}})
"#,
        want = sha256_hex(&value),
    );
    let result = call(&client, &code).await;
    let out = text_without(&result, &value);
    let env = case(&out, "env");
    let placeholder = env[NAME].as_str().expect("the placeholder is set");
    assert!(is_placeholder(placeholder), "{placeholder}");
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "PIP_CERT",
    ] {
        assert_eq!(env[name], CA_BUNDLE, "{name}: {out}");
    }
    assert!(
        case(&out, "ca")["certificates"].as_u64().unwrap() >= 1,
        "{out}"
    );
    let hash = case(&out, "hash");
    assert_eq!(hash["status"], 200, "{out}");
    let hashes: Value = serde_json::from_str(hash["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        hashes["authorization"],
        sha256_hex(&format!("Bearer {value}")),
        "the Authorization header carried the value: {hashes}"
    );
    assert_eq!(hashes["x-api-key"], sha256_hex(&value), "{hashes}");
    assert_eq!(hashes["key"], sha256_hex(&value), "the query: {hashes}");
    let unbound = case(&out, "unbound");
    assert_eq!(unbound["status"], 200, "{out}");
    let certifi = case(&out, "certifi");
    assert_eq!(certifi["where"], CA_BUNDLE, "{certifi}");
    let hashes: Value = serde_json::from_str(certifi["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        hashes["authorization"],
        sha256_hex(&format!("Bearer {value}"))
    );
    let scan = case(&out, "scan");
    assert_eq!(scan["found"], json!([]), "{scan}");
    assert_eq!(scan["in_environ"], false, "{scan}");
    assert_eq!(
        scan["decoys"],
        json!(["/tmp/decoy"]),
        "the scan works: {scan}"
    );
    assert!(scan["scanned"].as_u64().unwrap() > 20, "{scan}");
    let bound = entry(&result, "bound.test", 443, "allowed");
    assert_eq!(bound["secrets"], json!([NAME]), "{bound}");
    let plain = entry(&result, "unbound.test", 80, "allowed");
    assert!(
        plain.get("secrets").is_none(),
        "no secret went there: {plain}"
    );
    for record in host.records() {
        let data = record["data"].as_str().unwrap();
        if record["sni"] != "bound.test" {
            assert!(
                !data.contains(&value),
                "a request not to bound.test held the value"
            );
            assert!(!data.contains(placeholder), "{record}");
        }
    }
    host.finish(client, &value).await;
}

#[tokio::test]
async fn a_session_holds_the_placeholder_and_each_call_reports_its_own_injection() {
    let host = TestHost::start();
    let value = fresh_value();
    let client = host.bound_server(&value).await;
    let opened = client
        .call_tool(CallToolRequestParams::new("create_session"))
        .await
        .expect("create_session answered");
    let id = opened.structured_content.as_ref().expect("structured")["session_id"]
        .as_str()
        .expect("a session_id")
        .to_string();
    let in_session = |code: String| {
        let params = CallToolRequestParams::new("execute_python").with_arguments(
            json!({ "code": code, "session_id": id })
                .as_object()
                .unwrap()
                .clone(),
        );
        let client = &client;
        async move {
            tokio::time::timeout(Duration::from_secs(180), client.call_tool(params))
                .await
                .expect("answered in time")
                .expect("tools/call answered")
        }
    };
    let first = in_session(format!(
        "{PRELUDE}\ncase(\"placeholder\", {{\"value\": PH}})\n\
         case(\"hash\", get(\"https://bound.test/hash\", {{\"Authorization\": \"Bearer \" + PH}}))\n"
    ))
    .await;
    let out = text_without(&first, &value);
    assert!(is_placeholder(&placeholder(&out)), "{out}");
    let hash: Value = serde_json::from_str(case(&out, "hash")["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        hash["authorization"],
        sha256_hex(&format!("Bearer {value}"))
    );
    assert_eq!(
        entry(&first, "bound.test", 443, "allowed")["secrets"],
        json!([NAME])
    );
    // The next call of the session tried nothing: its report is its own, and empty.
    let second = in_session("print(1)".to_string()).await;
    let egress = &second.structured_content.as_ref().expect("structured")["egress"];
    assert_eq!(egress, &json!([]), "{egress}");
    host.finish(client, &value).await;
}

#[tokio::test]
async fn what_the_bound_host_sends_back_holds_the_placeholder_not_the_value() {
    let host = TestHost::start();
    let value = fresh_value();
    let client = host
        .server(&["--secret", "API_TOKEN=bound.test:443"], &[(NAME, &value)])
        .await;
    let code = format!(
        r#"{PRELUDE}
case("placeholder", {{"value": PH}})
case("echo", get("https://bound.test/echo?key=" + PH, {{"Authorization": "Bearer " + PH}}))
case("drip", get("https://bound.test/drip", {{"Authorization": "Bearer " + PH}}))
case("raw echo", raw(b"bound.test", req(b"/echo", headers=b"Authorization: Bearer " + P + b"\r\nAccept-Encoding: gzip, br\r\nRange: bytes=7-12\r\n")))
case("forms", raw(b"bound.test", req(b"/forms", headers=b"Authorization: Bearer " + P + b"\r\n")))
"#
    );
    let result = call(&client, &code).await;
    let out = text_without(&result, &value);
    let placeholder = placeholder(&out);
    assert!(is_placeholder(&placeholder), "{placeholder}");
    let echo = case(&out, "echo");
    assert_eq!(echo["status"], 200, "{out}");
    let head = echo["body"].as_str().unwrap().to_lowercase();
    assert!(
        head.starts_with(&format!("get /echo?key={placeholder} ")),
        "the request line, sent back: {head}"
    );
    assert!(
        head.contains(&format!("authorization: bearer {placeholder}\r\n")),
        "{head}"
    );
    assert_eq!(header(&echo, "X-Echo"), format!("Bearer {placeholder}"));
    let drip = case(&out, "drip");
    assert_eq!(drip["status"], 200, "{out}");
    assert_eq!(
        drip["body"],
        format!("Bearer {placeholder}"),
        "one byte a chunk"
    );
    let raw = case(&out, "raw echo");
    assert!(status(&raw).starts_with("HTTP/1.1 200"), "{raw}");
    let head = raw["body"].as_str().unwrap().to_lowercase();
    assert!(head.contains("accept-encoding: identity"), "{head}");
    assert!(!head.contains("gzip"), "{head}");
    assert!(!head.contains("range:"), "no part of an answer: {head}");
    // The value as a reason phrase, a header's name, upper-cased, percent-encoded: each masked.
    let forms = case(&out, "forms");
    let forms_head = forms["head"].as_str().unwrap();
    assert!(forms_head.starts_with("HTTP/1.1 200 OK\r\n"), "{forms}");
    assert!(
        !forms_head.contains("named"),
        "the header named with the value is gone: {forms}"
    );
    assert_eq!(
        forms["body"],
        format!("BEARER {placeholder} Bearer%20{placeholder}"),
        "every form is the placeholder"
    );
    assert_eq!(raw["alpn"], Value::Null, "no ALPN was offered, none chosen");
    assert_eq!(
        entry(&result, "bound.test", 443, "allowed")["secrets"],
        json!([NAME])
    );
    // The host did receive the value, each time: what came back was rewritten on the way.
    let records = host.records();
    for path in ["GET /echo?key=", "GET /drip ", "GET /echo "] {
        let record = records
            .iter()
            .find(|r| r["data"].as_str().unwrap().starts_with(path))
            .unwrap_or_else(|| panic!("no {path} reached the host"));
        assert!(
            record["data"].as_str().unwrap().contains(&value),
            "{path} reached the host without the value"
        );
    }
    client.cancel().await.unwrap();
    // Each start has placeholders of its own.
    let again = host
        .server(&["--secret", "API_TOKEN=bound.test:443"], &[(NAME, &value)])
        .await;
    let result = call(
        &again,
        "import json, os; print('CASE placeholder', json.dumps(os.environ['API_TOKEN']))",
    )
    .await;
    let out = text_without(&result, &value);
    let next = case(&out, "placeholder");
    assert!(is_placeholder(next.as_str().unwrap()), "{next}");
    assert_ne!(next, placeholder.as_str(), "a new start, a new placeholder");
    host.finish(again, &value).await;
}

#[tokio::test]
async fn a_placeholder_sent_anywhere_but_its_host_is_refused_and_never_forwarded() {
    let host = TestHost::start();
    let value = fresh_value();
    let other = fresh_value();
    let client = host
        .server(
            &[],
            &[
                (
                    "PYEXEC_SECRETS",
                    "API_TOKEN=bound.test; OTHER_TOKEN=other.test",
                ),
                ("PYEXEC_ALLOW_HOSTS", "unbound.test, bound.test"),
                (NAME, &value),
                ("OTHER_TOKEN", &other),
            ],
        )
        .await;
    let code = format!(
        r#"{PRELUDE}
PO = os.environ["OTHER_TOKEN"]
case("placeholder", {{"value": PH}})
case("header", get("http://unbound.test/record", {{"Authorization": "Bearer " + PH}}))
case("query", get("http://unbound.test/record?key=" + PH))
case("upper case", get("http://unbound.test/record", {{"X-Key": PH.upper()}}))
case("another secret's host", get("https://other.test/record", {{"Authorization": "Bearer " + PH}}))
case("its own host", get("https://other.test/hash", {{"Authorization": "Bearer " + PO}}))
case("plain http to its host", get("http://bound.test/record", {{"Authorization": "Bearer " + PH}}))
case("header name", raw(b"bound.test", req(b"/record", headers=b"X-" + P + b": 1\r\n")))
case("connect host", raw(P, b""))
case("connect header", raw(b"unbound.test", b"", connect_headers=b"X-Token: " + P + b"\r\n"))
"#
    );
    let result = call(&client, &code).await;
    let out = text_without(&result, &value);
    assert!(!out.contains(&other), "the answer holds the other value");
    let bound_elsewhere = format!("secret {NAME} is bound to other hosts");
    for name in ["header", "query", "upper case", "another secret's host"] {
        let got = case(&out, name);
        assert_eq!(got["status"], 403, "{name}: {got}");
        assert!(
            got["body"].as_str().unwrap().contains(&bound_elsewhere),
            "{name}: {got}"
        );
    }
    let own = case(&out, "its own host");
    assert_eq!(own["status"], 200, "{own}");
    let hashes: Value = serde_json::from_str(own["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        hashes["authorization"],
        sha256_hex(&format!("Bearer {other}"))
    );
    let cleartext = case(&out, "plain http to its host");
    assert_eq!(cleartext["status"], 403, "{cleartext}");
    let only_tls = format!("secret {NAME} is only sent over TLS");
    assert!(
        cleartext["body"].as_str().unwrap().contains(&only_tls),
        "{cleartext}"
    );
    let header_name = case(&out, "header name");
    assert!(
        status(&header_name).starts_with("HTTP/1.1 403"),
        "{header_name}"
    );
    for name in ["connect host", "connect header"] {
        let got = case(&out, name);
        assert!(
            status(&got).starts_with("refused HTTP/1.1 403"),
            "{name}: {got}"
        );
        assert!(
            got["body"].as_str().unwrap().contains(&bound_elsewhere),
            "{name}: {got}"
        );
    }
    for (host_name, port) in [("unbound.test", 80), ("other.test", 443)] {
        let refused = entry(&result, host_name, port, "blocked");
        assert_eq!(refused["reason"], bound_elsewhere.as_str(), "{refused}");
    }
    assert_eq!(
        entry(&result, "bound.test", 80, "blocked")["reason"],
        only_tls.as_str()
    );
    let refused = entry(&result, "bound.test", 443, "blocked");
    assert!(
        refused["reason"].as_str().unwrap().contains("header name"),
        "{refused}"
    );
    assert_eq!(
        entry(&result, "other.test", 443, "allowed")["secrets"],
        json!(["OTHER_TOKEN"])
    );
    // Nothing refused reached the host: neither the value nor the placeholder, in any case.
    let placeholder = placeholder(&out);
    for record in host.records() {
        let data = record["data"].as_str().unwrap().to_lowercase();
        assert!(!data.contains(&value), "the value reached the host");
        assert!(!data.contains(&placeholder), "{record}");
    }
    host.finish(client, &value).await;
}

#[tokio::test]
async fn smuggling_and_protocol_tricks_never_carry_the_value() {
    let host = TestHost::start();
    let value = fresh_value();
    let client = host.bound_server(&value).await;
    let code = format!(
        r#"{PRELUDE}
AUTH = b"Authorization: Bearer " + P + b"\r\n"
case("placeholder", {{"value": PH}})
case("fold", raw(b"bound.test", b"GET /case/fold HTTP/1.1\r\nHost: bound.test\r\nAuthorization: Bearer\r\n " + P + b"\r\nConnection: close\r\n\r\n"))
case("fold halves", raw(b"bound.test", req(b"/case/fold-halves", headers=b"Authorization: Bearer " + P[:30] + b"\r\n " + P[30:] + b"\r\n")))
case("fold elsewhere", plain(b"GET http://unbound.test/case/fold-elsewhere HTTP/1.1\r\nHost: unbound.test\r\nX-Note: see\r\n " + P + b"\r\nConnection: close\r\n\r\n"))
case("halves", raw(b"bound.test", req(b"/case/halves", headers=b"X-Key-A: " + P[:30] + b"\r\nX-Key-B: " + P[30:] + b"\r\n")))
case("upper case", raw(b"bound.test", req(b"/case/upper", headers=b"Authorization: Bearer " + P.upper() + b"\r\n")))
case("chunked body", raw(b"bound.test", req(b"/case/chunked", method=b"POST", headers=b"Transfer-Encoding: chunked\r\n", body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(P), P))))
case("dotted", raw(b"BOUND.TEST.", req(b"/hash", host=b"BOUND.TEST.", headers=AUTH), sni="bound.test"))
case("second hello", raw(b"bound.test", client_hello("hello.test")))
case("h2 preface", raw(b"bound.test", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
case("h2 alpn", raw(b"bound.test", req(b"/case/alpn"), alpn=["h2", "http/1.1"]))
inner = req(b"/case/smuggled?key=" + P, headers=AUTH)
case("cl te", raw(b"bound.test", b"POST /case/smuggle-cl-te HTTP/1.1\r\nHost: bound.test\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(inner)) + inner))
case("te cl", raw(b"bound.test", b"POST /case/smuggle-te-cl HTTP/1.1\r\nHost: bound.test\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n" % (5 + len(inner)) + inner))
case("fronted", raw(b"bound.test", req(b"/case/fronted", host=b"unbound.test", headers=AUTH)))
case("absolute", raw(b"bound.test", req(b"http://unbound.test/case/absolute?key=" + P, headers=AUTH)))
"#
    );
    let result = call(&client, &code).await;
    let out = text_without(&result, &value);
    let placeholder = placeholder(&out);
    assert!(is_placeholder(&placeholder), "{placeholder}");
    for name in ["fold", "fold halves", "second hello", "h2 preface"] {
        assert_refused_or_closed(&out, name);
    }
    // Content-Length with Transfer-Encoding: chunked wins (RFC 9112 6.3), Content-Length is
    // dropped and the connection closed after the answer; so the outer request may be
    // answered, and what was smuggled in its body never reaches the host as a request.
    for name in ["cl te", "te cl"] {
        let got = case(&out, name);
        let s = status(&got);
        assert!(
            s == "closed" || s.starts_with("HTTP/1.1 400") || s.starts_with("HTTP/1.1 200"),
            "{name}: {got}"
        );
    }
    let elsewhere = case(&out, "fold elsewhere");
    let s = status(&elsewhere);
    assert!(
        s == "closed" || s.starts_with("HTTP/1.1 400") || s.starts_with("HTTP/1.1 403"),
        "{elsewhere}"
    );
    for name in ["halves", "chunked body", "h2 alpn", "dotted"] {
        let got = case(&out, name);
        assert!(status(&got).starts_with("HTTP/1.1 200"), "{name}: {got}");
    }
    let alpn = case(&out, "h2 alpn");
    assert!(alpn["alpn"] != "h2", "HTTP/2 is not offered: {alpn}");
    let dotted: Value =
        serde_json::from_str(case(&out, "dotted")["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        dotted["authorization"],
        sha256_hex(&format!("Bearer {value}")),
        "BOUND.TEST. is bound.test: {dotted}"
    );
    for name in ["upper case", "fronted", "absolute"] {
        let s = status(&case(&out, name)).to_string();
        assert!(s != "timeout" && !s.starts_with("error"), "{name}: {s}");
    }
    // What the host received, case by case: the value only where it belongs (/hash, asked
    // for as BOUND.TEST.), the placeholder as it was sent in a body, nothing refused at all.
    let records = host.records();
    let with = |marker: &str| -> Vec<String> {
        records
            .iter()
            .map(|r| r["data"].as_str().unwrap().to_string())
            .filter(|data| data.contains(marker))
            .collect()
    };
    for data in records.iter().map(|r| r["data"].as_str().unwrap()) {
        if data.contains(&value) {
            assert!(
                data.starts_with("GET /hash "),
                "the value reached the host in a request that is not /hash (starting {:?})",
                data.split("\r\n")
                    .next()
                    .unwrap()
                    .replace(&value, "<VALUE>")
            );
        }
    }
    for outer in with("/case/smuggle-") {
        let head = outer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            !head.contains("content-length") && head.contains("transfer-encoding: chunked"),
            "a smuggling request goes on chunked alone: {head}"
        );
    }
    for marker in [
        "/case/fold",
        "/case/smuggled",
        "hello.test",
        "PRI * HTTP/2.0",
    ] {
        assert!(
            with(marker).is_empty(),
            "{marker} reached the host: {:?}",
            with(marker)
        );
    }
    let chunked = with("/case/chunked");
    assert_eq!(chunked.len(), 1, "{chunked:?}");
    assert!(
        chunked[0].contains(&placeholder),
        "a body goes as it is: {chunked:?}"
    );
    let halves = with("/case/halves");
    assert_eq!(halves.len(), 1, "{halves:?}");
    assert!(halves[0].contains(&placeholder[..30]) && halves[0].contains(&placeholder[30..]));
    host.finish(client, &value).await;
}

/// The binary with these arguments and settings (and none of this file's secret variables
/// but those given), until it exits (at most 30 s): its status and stderr.
fn start_only(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove(NAME)
        .env_remove("PYEXEC_SECRETS")
        .env_remove("PYEXEC_TEST_MISSING")
        .env("PYEXEC_POOL_SIZE", "0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server with {args:?} neither refused nor ended within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn a_secret_without_a_usable_value_stops_the_server_at_start_naming_it() {
    let flag = ["--secret", "API_TOKEN=bound.test"];
    for (what, value) in [
        ("unset", None),
        ("empty", Some("")),
        ("too short", Some("abc1234")),
        ("with a space", Some("has a space in it")),
        ("with a control character", Some("tab\there-long-enough")),
    ] {
        let env: Vec<(&str, &str)> = value.map(|v| (NAME, v)).into_iter().collect();
        let (status, stderr) = start_only(&flag, &env);
        assert!(!status.success(), "{what}: started ({status})");
        assert!(stderr.contains(NAME), "{what}: {stderr}");
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            assert!(!stderr.contains(value), "{what}: the error shows the value");
        }
    }
    // The variable's form, `;` between secrets: the second one's variable is missing.
    let value = fresh_value();
    let (status, stderr) = start_only(
        &[],
        &[
            (
                "PYEXEC_SECRETS",
                "API_TOKEN=bound.test; PYEXEC_TEST_MISSING=other.test",
            ),
            (NAME, &value),
        ],
    );
    assert!(!stderr.contains(&value), "the error shows the other value");
    assert!(!status.success(), "started ({status}): {stderr}");
    assert!(stderr.contains("PYEXEC_TEST_MISSING"), "{stderr}");
}
