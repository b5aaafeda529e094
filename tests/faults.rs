//! Faults around the sandbox: the server killed mid-call, the Docker daemon going away and
//! coming back, a client cancelling over MCP. After each, nothing may be left behind.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientRequest, Request};
use rmcp::service::PeerRequestOptions;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

/// Containers (any state) owned by one server instance.
fn containers_of(instance: &str) -> HashSet<String> {
    listed(instance, &["-a"])
}

/// The instance's containers that are running (started, not yet exited).
fn running_of(instance: &str) -> HashSet<String> {
    listed(instance, &["--filter", "status=running"])
}

fn listed(instance: &str, extra: &[&str]) -> HashSet<String> {
    let filter = format!("label=mcp-python-executor={instance}");
    let out = Command::new("docker")
        .args(["ps", "-q", "--no-trunc", "--filter", &filter])
        .args(extra)
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Reads a server's stderr until it logs its instance id (tests run side by side, so
/// containers are told apart by their owner label).
fn instance_from(stderr: impl std::io::Read + Send + 'static) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let instance = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let start = line.find("instance=")? + "instance=".len();
            Some(
                line[start..]
                    .trim_matches('"')
                    .split(['"', ' '])
                    .next()?
                    .to_string(),
            )
        })
        .expect("the server logs its instance id");
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    instance
}

async fn wait_for_container(instance: &str) -> HashSet<String> {
    for _ in 0..200 {
        let found = containers_of(instance);
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no container appeared for instance {instance}");
}

/// Starts a server once (an empty `exec`) and checks that its reaper removed every container
/// of the dead `instance`.
fn assert_next_start_reaps(instance: &str) {
    let next = Command::new(BINARY)
        .args(["exec", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    let left = containers_of(instance);
    assert!(left.is_empty(), "not reaped: {left:?}");
}

/// Polls `done` every 100 ms for up to 10 s; true once it holds.
async fn within_10s(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// An `exec` (timeout 2 s, so its container's deadline is 12 s away) in the middle of a call
/// that sleeps, once its container exists; and its instance id.
async fn exec_mid_call() -> (std::process::Child, String) {
    let mut server = Command::new(BINARY)
        .args(["exec", "--timeout", "2"])
        .env("RUST_LOG", "mcp_python_executor=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server
        .stdin
        .take()
        .unwrap()
        .write_all(b"import time\ntime.sleep(600)")
        .unwrap();
    let instance = instance_from(server.stderr.take().unwrap());
    wait_for_container(&instance).await;
    (server, instance)
}

/// A server on stdio (never initialized) with a pool of 2, once both warm containers run.
async fn server_with_full_pool() -> (std::process::Child, String) {
    let mut server = Command::new(BINARY)
        .env("PYEXEC_POOL_SIZE", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let instance = instance_from(server.stderr.take().unwrap());
    // Running, not only created: a container its server never got to start is only reaped
    // once it has stayed "created" for twice the start timeout (minutes), which is not what
    // these tests are about. On a loaded machine the second one can still be between its
    // create and its start when two merely exist.
    assert!(
        within_10s(|| running_of(&instance).len() == 2).await,
        "the pool filled"
    );
    (server, instance)
}

#[tokio::test]
async fn a_server_killed_mid_call_is_cleaned_up_by_the_next_start() {
    let (mut server, instance) = exec_mid_call().await;
    let orphans = containers_of(&instance);
    server.kill().unwrap(); // SIGKILL: no cleanup can run
    server.wait().unwrap();
    assert_eq!(
        containers_of(&instance),
        orphans,
        "the kill left the container for the reaper"
    );

    // Its deadline is the timeout plus two 5 s graces; after that any new server reaps it.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_next_start_reaps(&instance);
}

#[tokio::test]
async fn a_killed_servers_warm_containers_are_reaped_at_the_next_start() {
    let (mut server, instance) = server_with_full_pool().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill().unwrap(); // SIGKILL: the pool cannot be drained
    server.wait().unwrap();
    assert!(
        !containers_of(&instance).is_empty(),
        "the kill left warm containers"
    );

    // Their deadline is minutes away, but they exited when their attach connection died, so
    // the next server to start removes them at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_next_start_reaps(&instance);
}

/// A session's container lives up to an hour, and it is frozen between calls, so its runner
/// cannot see its stdin close when the server dies; but the dead server's liveness lock is
/// free, so the next server to start on this machine removes it at once.
#[tokio::test]
async fn a_killed_servers_sessions_are_reaped_at_the_next_start() {
    use std::io::BufRead;
    let mut server = Command::new(BINARY)
        .env("PYEXEC_POOL_SIZE", "0")
        .env("RUST_LOG", "mcp_python_executor=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let instance = instance_from(server.stderr.take().unwrap());
    let mut stdin = server.stdin.take().unwrap();
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_session","arguments":{}}}"#,
    ] {
        stdin.write_all(message.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    let answered = std::io::BufReader::new(server.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains(r#""id":2"#))
        .expect("create_session answered");
    assert!(answered.contains("session_id"), "{answered}");
    assert_eq!(
        containers_of(&instance).len(),
        1,
        "the session's container exists"
    );
    server.kill().unwrap(); // SIGKILL: the session cannot be closed
    server.wait().unwrap();
    assert!(
        listed(&instance, &["--filter", "status=paused"]).len() == 1
            || containers_of(&instance).is_empty(),
        "the session waits frozen (or another server's reaper took it already)"
    );
    // Any serving server's reaper may take it from here (tests run side by side); the next
    // start does for certain.
    assert_next_start_reaps(&instance);
}

/// A Unix-socket proxy to the real Docker socket that the test can take down and bring back.
struct FlakyDocker {
    path: std::path::PathBuf,
    accept: Mutex<Option<JoinHandle<()>>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FlakyDocker {
    async fn start() -> Arc<Self> {
        let path = std::env::temp_dir().join(format!(
            "pyexec-docker-{}.sock",
            uuid::Uuid::new_v4().simple()
        ));
        let proxy = Arc::new(Self {
            path,
            accept: Mutex::new(None),
            links: Arc::default(),
        });
        proxy.up().await;
        proxy
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    async fn up(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let links = self.links.clone();
        *self.accept.lock().await = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut docker) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut docker).await;
                    }
                });
                links.lock().await.push(link);
            }
        }));
    }

    /// Stops accepting and cuts every open connection, as a stopped daemon would.
    async fn down(&self) {
        if let Some(accept) = self.accept.lock().await.take() {
            accept.abort();
        }
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn calls_fail_clearly_while_docker_is_down_and_work_again_when_it_is_back() {
    let proxy = FlakyDocker::start().await;
    let host = proxy.host();
    let mut command = tokio::process::Command::new(BINARY);
    command.env("DOCKER_HOST", &host);
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let instance = instance_from(std::fs::File::from(
        stderr.unwrap().into_owned_fd().unwrap(),
    ));
    let client = ().serve(transport).await.unwrap();
    let call = |code: &str| {
        CallToolRequestParams::new("execute_python")
            .with_arguments(json!({ "code": code }).as_object().unwrap().clone())
    };

    let ok = client.call_tool(call("print('up')")).await.unwrap();
    assert_eq!(text(&ok), "stdout:\nup\n");

    proxy.down().await;
    for _ in 0..2 {
        let down = client.call_tool(call("print('down?')")).await.unwrap();
        assert_eq!(down.is_error, Some(true));
        let message = text(&down);
        assert!(
            message.contains(&format!("cannot reach Docker at {host}")),
            "{message}"
        );
        assert!(message.contains("is the daemon running?"), "{message}");
    }

    proxy.up().await;
    let back = client.call_tool(call("print('back')")).await.unwrap();
    assert_eq!(text(&back), "stdout:\nback\n", "{back:?}");
    client.cancel().await.unwrap();
    // The server removes its containers on the way out, through the proxy.
    assert!(
        within_10s(|| containers_of(&instance).is_empty()).await,
        "left after shutdown: {:?}",
        containers_of(&instance)
    );
    proxy.down().await;
}

/// The container of `instance` in which the program has created `/tmp/started`.
async fn container_running_the_call(instance: &str) -> String {
    for _ in 0..200 {
        for id in containers_of(instance) {
            let probe = Command::new("docker")
                .args(["exec", &id, "test", "-e", "/tmp/started"])
                .output()
                .expect("docker exec");
            if probe.status.success() {
                return id;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no container of {instance} started the call");
}

/// Cancels a sleeping call and checks that the container that ran it goes at once, on the
/// cold path (pool 0) and on the warm path (the pool's other containers stay).
async fn cancel_removes_the_calls_container(pool_size: &str) {
    let mut command = tokio::process::Command::new(BINARY);
    command.env("PYEXEC_POOL_SIZE", pool_size);
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = stderr.unwrap().into_owned_fd().unwrap();
    let instance = instance_from(std::fs::File::from(stderr));
    let client = ().serve(transport).await.unwrap();
    let params = CallToolRequestParams::new("execute_python").with_arguments(
        json!({"code": "open('/tmp/started', 'w').close()\nimport time\ntime.sleep(600)"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let running = container_running_the_call(&instance).await;
    handle
        .cancel(Some("user pressed stop".to_string()))
        .await
        .unwrap();
    assert!(
        within_10s(|| !containers_of(&instance).contains(&running)).await,
        "the cancelled call's container {running} is still there (pool {pool_size})"
    );
    client.cancel().await.unwrap();
    // The server drains its pool on the way out.
    assert!(
        within_10s(|| containers_of(&instance).is_empty()).await,
        "left after shutdown: {:?}",
        containers_of(&instance)
    );
}

#[tokio::test]
async fn a_call_cancelled_by_the_client_has_its_container_removed_at_once() {
    cancel_removes_the_calls_container("0").await;
}

#[tokio::test]
async fn a_cancelled_call_on_a_warm_container_has_it_removed_at_once() {
    cancel_removes_the_calls_container("2").await;
}

#[tokio::test]
async fn a_client_that_leaves_before_initializing_leaves_no_warm_containers() {
    let (mut server, instance) = server_with_full_pool().await;
    drop(server.stdin.take()); // EOF before any initialize request
    let status = server.wait().unwrap();
    assert!(!status.success(), "no session is an error exit");
    let left = containers_of(&instance);
    assert!(left.is_empty(), "left after exit: {left:?}");
}

#[tokio::test]
async fn a_killed_servers_containers_go_while_a_new_server_keeps_serving() {
    // One dead server had a call running (deadline: 2 s timeout + two 5 s graces), another a
    // full warm pool; both are SIGKILLed and a new server starts at once, as desktop clients
    // restart theirs. No restart after that: the new server's reaper must do it while serving.
    let (mut calling, call_instance) = exec_mid_call().await;
    let (mut pooled, pool_instance) = server_with_full_pool().await;
    calling.kill().unwrap();
    pooled.kill().unwrap();
    calling.wait().unwrap();
    pooled.wait().unwrap();

    let (transport, _) = TokioChildProcess::builder(tokio::process::Command::new(BINARY))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = ().serve(transport).await.unwrap();
    let mut gone = false;
    // The call's deadline is at most 12 s away; the promise is that plus 30 s.
    for _ in 0..84 {
        if containers_of(&call_instance).is_empty() && containers_of(&pool_instance).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        gone,
        "left: {:?} {:?}",
        containers_of(&call_instance),
        containers_of(&pool_instance)
    );
    let call = CallToolRequestParams::new("execute_python").with_arguments(
        json!({ "code": "print('serving')" })
            .as_object()
            .unwrap()
            .clone(),
    );
    let answer = client.call_tool(call).await.unwrap();
    assert_eq!(text(&answer), "stdout:\nserving\n");
    client.cancel().await.unwrap();
}
