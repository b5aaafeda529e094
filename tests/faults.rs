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
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

/// Containers (any state) owned by one server instance.
fn containers_of(instance: &str) -> HashSet<String> {
    let filter = format!("label=mcp-python-executor={instance}");
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &filter])
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

#[tokio::test]
async fn a_server_killed_mid_call_is_cleaned_up_by_the_next_start() {
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
    let orphans = wait_for_container(&instance).await;
    server.kill().unwrap(); // SIGKILL: no cleanup can run
    server.wait().unwrap();
    assert_eq!(
        containers_of(&instance),
        orphans,
        "the kill left the container for the reaper"
    );

    // Its deadline is the timeout plus two 5 s graces; after that any new server reaps it.
    tokio::time::sleep(Duration::from_secs(14)).await;
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
    let left = containers_of(&instance);
    assert!(left.is_empty(), "not reaped: {left:?}");
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
    let command = tokio::process::Command::new(BINARY).configure(|cmd| {
        cmd.env("DOCKER_HOST", &host);
    });
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
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
    proxy.down().await;
}

#[tokio::test]
async fn a_call_cancelled_by_the_client_has_its_container_removed_at_once() {
    let (transport, stderr) = TokioChildProcess::builder(tokio::process::Command::new(BINARY))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = stderr.unwrap().into_owned_fd().unwrap();
    let instance = instance_from(std::fs::File::from(stderr));
    let client = ().serve(transport).await.unwrap();
    let params = CallToolRequestParams::new("execute_python").with_arguments(
        json!({"code": "import time\ntime.sleep(600)"})
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
    wait_for_container(&instance).await;
    handle
        .cancel(Some("user pressed stop".to_string()))
        .await
        .unwrap();
    for _ in 0..100 {
        if containers_of(&instance).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = containers_of(&instance);
    assert!(
        left.is_empty(),
        "the cancelled call's container is still there: {left:?}"
    );
    client.cancel().await.unwrap();
}
