//! `make bench`: how much isolation costs, against the floors, in one process and one go.
//!
//! For `print(1)`: the host's `python3 -c`, the `docker run --rm` CLI on the same image, the
//! start request alone (the floor of any container-per-call design), our cold path (a
//! container started per call), our warm path (a pool container) and a call in a session (an
//! interpreter already running), each p50 and p95; then calls/s at concurrency 1, 4 and 8 for cold and warm against `docker run`
//! churn at 8; then the release server's RSS idle and after 1,000 calls over MCP, and the
//! Docker API requests one execution makes (counted by a proxy on the Docker socket); then
//! the same server over MCP on stdio and on Streamable HTTP with a token (warm p50 and calls/s
//! at concurrency 8 each, side by side); then
//! `install_packages`: a fresh small install (a wheel from a local index) and an install of an
//! already-present spec, which must answer in ≤ 100 ms; then egress (`bench/egress.rs`): warm
//! p50 with an allowlist, and a download through the proxy against one without it. Prints a
//! markdown table with ratios, so runs on noisy machines stay comparable. Exits non-zero if a
//! call fails; the targets are reported, not asserted.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_python_executor::config::SandboxArgs;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

#[path = "bench/egress.rs"]
mod egress;
#[path = "bench/secrets.rs"]
mod secrets;

/// Sequential calls per latency row.
const CALLS: usize = 30;
/// Calls per throughput cell.
const BURST: usize = 40;
const CODE: &str = "print(1)";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p95 of `CALLS` sequential runs of `once` (after one warm-up run).
async fn latency<F, Fut>(mut once: F) -> anyhow::Result<(Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    once().await?;
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        samples.push(once().await?);
    }
    Ok((
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.95),
    ))
}

fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success() && output.stdout == b"1\n",
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The host's interpreter: the system one when there is one (on Debian the very binary the
/// offline image runs), else the real executable behind `python3` on PATH, which may be a
/// wrapper (pyenv's shim is a shell script) that would make the floor look slower than it is.
fn host_python() -> Command {
    static REAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let real = REAL.get_or_init(|| {
        if std::path::Path::new("/usr/bin/python3").exists() {
            return "/usr/bin/python3".to_string();
        }
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_string())
    });
    let mut command = Command::new(real);
    command.args(["-c", CODE]);
    command
}

fn docker_run(image: &str) -> Command {
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "python3",
        "-c",
        CODE,
    ]);
    command
}

/// The floor of any container-per-call design: the start request alone, over the API, for a
/// container (network none, command `true`) created beforehand; create and removal untimed.
async fn start_alone(docker: &bollard::Docker, image: &str) -> anyhow::Result<Duration> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["true".to_string()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?
        .id;
    let started = Instant::now();
    let outcome = docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await;
    let elapsed = started.elapsed();
    let remove = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker.remove_container(&id, Some(remove)).await?;
    outcome?;
    Ok(elapsed)
}

fn sandbox(pool: u64) -> anyhow::Result<Arc<Sandbox>> {
    let args = SandboxArgs {
        pool_size: pool,
        ..SandboxArgs::default()
    };
    Ok(Arc::new(Sandbox::new(args.resolve()?)))
}

async fn execute(sandbox: &Sandbox) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let result = sandbox
        .execute(&ExecutionRequest::new(CODE), &CancellationToken::new())
        .await?;
    anyhow::ensure!(result.stdout == "1\n" && !result.failed(), "{result:?}");
    Ok(started.elapsed())
}

/// Waits until the pool holds `size` ready containers (so a latency sample measures the
/// warm path, as a call a few seconds after the last one would).
async fn pool_full(sandbox: &Sandbox, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.pool_ready() < size && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh small install (median of three, each a new one-wheel layer from a local index the
/// bench serves) and `CALLS` installs of a spec already present (p50, p95).
async fn installs() -> anyhow::Result<(Duration, Duration, Duration)> {
    use mcp_python_executor::config::EnvironmentArgs;
    use mcp_python_executor::image::Environment;
    use std::io::BufRead;
    let mut index = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/index_server.py"
        ))
        .args([
            "pyexec-bench-0==1.0",
            "pyexec-bench-1==1.0",
            "pyexec-bench-2==1.0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    std::io::BufReader::new(index.stdout.take().expect("piped")).read_line(&mut port)?;
    let tag = format!("mcp-python-executor/env:bench-{}", std::process::id());
    let environment = Environment::new(
        sandbox(0)?,
        EnvironmentArgs {
            env_tag: tag.clone(),
            install_network: "host".to_string(),
            pip_index_url: Some(format!("http://127.0.0.1:{}/simple", port.trim())),
            state_dir: Some(std::env::temp_dir().join("pyexec-bench-state")),
            ..EnvironmentArgs::default()
        }
        .resolve()?,
    );
    let cancel = CancellationToken::new();
    let quiet = |_: &str| {};
    let measured = async {
        let mut fresh = Vec::new();
        for i in 0..3 {
            let started = Instant::now();
            let report = environment
                .install(&[format!("pyexec-bench-{i}")], &quiet, &cancel)
                .await?;
            anyhow::ensure!(report.installed.len() == 1, "{report:?}");
            fresh.push(started.elapsed());
        }
        let (present50, present95) = latency(|| async {
            let started = Instant::now();
            let report = environment
                .install(&["pyexec-bench-0"], &quiet, &cancel)
                .await?;
            anyhow::ensure!(report.installed.is_empty(), "{report:?}");
            Ok(started.elapsed())
        })
        .await?;
        Ok((percentile(&mut fresh, 0.5), present50, present95))
    }
    .await;
    let _ = index.kill();
    let _ = environment.reset().await;
    measured
}

/// Calls per second for `BURST` calls of `once`, `concurrency` at a time.
async fn throughput<F, Fut>(concurrency: usize, once: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..BURST)
        .map(|_| once())
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(BURST as f64 / started.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A proxy on a Unix socket in front of the Docker socket that records each HTTP request's
/// method and path (with ids and names folded), to count API calls per execution.
struct CountingProxy {
    path: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    async fn start() -> anyhow::Result<Self> {
        let path = format!("/tmp/pyexec-bench-{}.sock", std::process::id());
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(daemon) = UnixStream::connect("/var/run/docker.sock").await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut daemon_read, mut daemon_write) = daemon.into_split();
                    let upstream = async {
                        let mut buffer = vec![0u8; 64 << 10];
                        loop {
                            let n = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            record(&buffer[..n], &seen);
                            if daemon_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = daemon_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut daemon_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Ok(Self { path, requests })
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.requests.lock().unwrap())
    }
}

/// Records request lines found at the start of a read (HTTP/1.1 requests are written whole).
fn record(bytes: &[u8], seen: &Mutex<Vec<String>>) {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    let Some(line) = text.lines().next() else {
        return;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if !version.starts_with("HTTP/1.") {
        return;
    }
    let path = path.split('?').next().unwrap_or_default();
    // /v1.41/containers/<name>/attach -> containers/{id}/attach
    let folded: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('v'))
        .enumerate()
        .map(|(i, s)| {
            if i == 1 && s != "create" && s != "json" {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    seen.lock()
        .unwrap()
        .push(format!("{method} /{}", folded.join("/")));
}

fn tally(requests: &[String], executions: usize) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for request in requests {
        *counts.entry(request).or_default() += 1;
    }
    counts
        .iter()
        .map(|(request, n)| format!("{request} ×{:.1}", *n as f64 / executions as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts the release server over MCP with `env`; returns the client and the server's pid.
async fn server(
    binary: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(rmcp::service::RunningService<rmcp::RoleClient, ()>, u32)> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let command = tokio::process::Command::new(binary).configure(|cmd| {
        cmd.envs(env).env("RUST_LOG", "warn");
    });
    let transport = TokioChildProcess::new(command)?;
    let pid = transport.id().expect("server pid");
    let client = ().serve(transport).await?;
    Ok((client, pid))
}

async fn call(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>) -> anyhow::Result<()> {
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({ "code": CODE }).as_object().unwrap().clone());
    let result = client.call_tool(params).await?;
    anyhow::ensure!(result.is_error == Some(false), "{result:?}");
    Ok(())
}

/// Waits until the server `pid` has `n` warm containers (running, labelled warm).
async fn warm_containers(n: usize) {
    for _ in 0..600 {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                "label=mcp-python-executor.warm",
                "--filter",
                "status=running",
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .count()
            })
            .unwrap_or(0);
        if out >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// Token of the bench's HTTP server.
const BENCH_TOKEN: &str = "bench-token-0123456789abcdef";

/// The release server serving `--http` on a free loopback port with a token, and `sessions`
/// clients connected to it (one MCP session each).
async fn http_server(
    binary: &str,
    sessions: usize,
) -> anyhow::Result<(tokio::process::Child, Vec<Client>)> {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(binary)
        .env("PYEXEC_HTTP", format!("127.0.0.1:{port}"))
        .env("PYEXEC_HTTP_TOKEN", BENCH_TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut clients = Vec::with_capacity(sessions);
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients.len() < sessions {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(BENCH_TOKEN),
        );
        match ().serve(transport).await {
            Ok(client) => clients.push(client),
            Err(error) if Instant::now() > deadline => {
                anyhow::bail!("the HTTP server did not answer within 30 s: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok((child, clients))
}

/// Over MCP: the p50 of sequential calls with the pool full, then calls/s for `BURST` calls
/// 8 at a time, spread over `clients` in turn.
async fn over_mcp(clients: &[Client]) -> anyhow::Result<(Duration, f64)> {
    let (p50, _) = latency(|| async {
        warm_containers(2).await;
        let started = Instant::now();
        call(&clients[0]).await?;
        Ok(started.elapsed())
    })
    .await?;
    warm_containers(2).await;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let rate = throughput(8, || {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            call(&clients[i % clients.len()]).await?;
            Ok(Duration::ZERO)
        }
    })
    .await?;
    Ok((p50, rate))
}

/// Waits until no warm container of any server is left (a server that just ended removes its
/// own), so the next server's pool is what gets counted.
async fn no_warm_containers() {
    for _ in 0..600 {
        let left = Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=mcp-python-executor.warm"])
            .output()
            .map(|o| !o.stdout.iter().all(u8::is_ascii_whitespace))
            .unwrap_or(false);
        if !left {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/mcp-python-executor".to_string());
    let image = SandboxArgs::default().image;
    // `bench BINARY secrets`: only the secrets row (what interception costs).
    if std::env::args().nth(2).as_deref() == Some("secrets") {
        println!("{}", secrets::row().await?);
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("bench: latency ({CALLS} calls each)");

    let (host50, host95) = latency(|| async {
        let started = Instant::now();
        run_checked(&mut host_python())?;
        Ok(started.elapsed())
    })
    .await?;
    let (run50, run95) = latency(|| async {
        let started = Instant::now();
        run_checked(&mut docker_run(&image))?;
        Ok(started.elapsed())
    })
    .await?;
    let docker_api = bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await?;
    let (start50, start95) = latency(|| start_alone(&docker_api, &image)).await?;
    let cold = sandbox(0)?;
    // Each sample starts once the previous call's container is gone (its removal runs just
    // after the answer), as a call a moment after the last one would; `docker run --rm`
    // waits for its removal itself. Throughput below measures back-to-back calls.
    let (cold50, cold95) = latency(|| async {
        cold.settle().await;
        execute(&cold).await
    })
    .await?;
    let warm = sandbox(2)?;
    warm.start_pool();
    let (warm50, warm95) = latency(|| async {
        warm.settle().await;
        pool_full(&warm, 2).await;
        execute(&warm).await
    })
    .await?;
    // A call in a session starts no container: the payload goes to an interpreter that is
    // already running, with the namespace of its earlier calls.
    let session = warm
        .create_session(None, &CancellationToken::new())
        .await?
        .session_id;
    let (session50, session95) = latency(|| async {
        let started = Instant::now();
        let called = warm
            .execute_in_session(
                &session,
                None,
                &ExecutionRequest::new(CODE),
                &CancellationToken::new(),
                &|_, _| {},
            )
            .await?;
        anyhow::ensure!(
            called.result.stdout == "1\n" && !called.result.failed(),
            "{called:?}"
        );
        Ok(started.elapsed())
    })
    .await?;
    warm.close_session(&session, None)?;

    eprintln!(
        "bench: p50/p95 ms: host {:.1}/{:.1}, docker run {:.1}/{:.1}, start alone {:.1}/{:.1}, cold {:.1}/{:.1}, warm {:.1}/{:.1}, session {:.1}/{:.1}",
        ms(host50),
        ms(host95),
        ms(run50),
        ms(run95),
        ms(start50),
        ms(start95),
        ms(cold50),
        ms(cold95),
        ms(warm50),
        ms(warm95),
        ms(session50),
        ms(session95)
    );
    if std::env::var("BENCH_LATENCY_ONLY").is_ok() {
        cold.shutdown(Duration::from_secs(30)).await;
        warm.shutdown(Duration::from_secs(30)).await;
        return Ok(());
    }
    eprintln!("bench: throughput ({BURST} calls per cell)");
    let mut rates = Vec::new();
    for concurrency in [1, 4, 8] {
        let cold_rate = throughput(concurrency, || execute(&cold)).await?;
        pool_full(&warm, 2).await;
        let warm_rate = throughput(concurrency, || execute(&warm)).await?;
        rates.push((concurrency, cold_rate, warm_rate));
    }
    let churn = {
        let started = Instant::now();
        let image = image.clone();
        let results: Vec<_> = futures::stream::iter(0..BURST)
            .map(|_| {
                let image = image.clone();
                tokio::task::spawn_blocking(move || run_checked(&mut docker_run(&image)))
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for result in results {
            result??;
        }
        BURST as f64 / started.elapsed().as_secs_f64()
    };
    cold.shutdown(Duration::from_secs(30)).await;
    warm.shutdown(Duration::from_secs(30)).await;

    eprintln!("bench: server RSS and Docker API calls");
    let (client, pid) = server(&binary, &[]).await?;
    warm_containers(2).await;
    let idle_rss = rss_kib(pid);
    let thousand: Vec<_> = futures::stream::iter(0..1000)
        .map(|_| call(&client))
        .buffer_unordered(4)
        .collect()
        .await;
    for result in thousand {
        result?;
    }
    let after_rss = rss_kib(pid);
    eprintln!("bench: stdio and HTTP over MCP");
    let (stdio50, stdio_rate) = over_mcp(std::slice::from_ref(&client)).await?;
    client.cancel().await?;
    no_warm_containers().await;
    let (mut http_child, sessions) = http_server(&binary, 8).await?;
    let (http50, http_rate) = over_mcp(&sessions).await?;
    for session in sessions {
        session.cancel().await?;
    }
    // SIGTERM: the graceful stop, which removes the server's containers before it exits.
    let pid = http_child.id().expect("the HTTP server runs").to_string();
    anyhow::ensure!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success(),
        "cannot signal the HTTP server"
    );
    let stopped = http_child.wait().await?;
    anyhow::ensure!(stopped.success(), "the HTTP server ended with {stopped}");
    no_warm_containers().await;

    let proxy = CountingProxy::start().await?;
    let host = format!("unix://{}", proxy.path);
    let mut api = Vec::new();
    for (label, pool) in [("cold", "0"), ("warm", "2")] {
        let (client, _) = server(
            &binary,
            &[("DOCKER_HOST", &host), ("PYEXEC_POOL_SIZE", pool)],
        )
        .await?;
        call(&client).await?; // connects, negotiates, loads the environment
        if pool != "0" {
            warm_containers(2).await;
        }
        proxy.take();
        let runs = 10;
        for _ in 0..runs {
            call(&client).await?;
            // The removal (and, warm, the refill) happen just after the answer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if pool != "0" {
                warm_containers(2).await;
            }
        }
        let requests = proxy.take();
        api.push((
            label,
            requests.len() as f64 / runs as f64,
            tally(&requests, runs),
        ));
        client.cancel().await?;
    }
    let _ = std::fs::remove_file(&proxy.path);

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let docker = Command::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "## bench: `print(1)`, {cores} cores, Docker {docker}, kernel {}\n",
        kernel.trim()
    );
    println!(
        "host interpreter: `{}`\n",
        host_python().get_program().to_string_lossy()
    );
    println!("| path | p50 ms | p95 ms | p50 vs host | p50 vs docker run |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, p50, p95) in [
        ("host `python3 -c`", host50, host95),
        ("`docker run --rm`", run50, run95),
        ("container start alone (API, floor)", start50, start95),
        ("cold (container per call)", cold50, cold95),
        ("warm (pool)", warm50, warm95),
        ("in a session (no container start)", session50, session95),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            ms(p50),
            ms(p95),
            ms(p50) / ms(host50),
            ms(p50) / ms(run50)
        );
    }
    println!("\n| concurrency | cold calls/s | warm calls/s | `docker run` churn calls/s |");
    println!("| ---: | ---: | ---: | ---: |");
    for (concurrency, cold_rate, warm_rate) in &rates {
        let churn_cell = if *concurrency == 8 {
            format!("{churn:.1}")
        } else {
            "".to_string()
        };
        println!("| {concurrency} | {cold_rate:.1} | {warm_rate:.1} | {churn_cell} |");
    }
    println!(
        "\n| transport (release server, pool of 2) | warm p50 ms per MCP call | calls/s at concurrency 8 |"
    );
    println!("| --- | ---: | ---: |");
    println!(
        "| stdio (one client, 8 calls in flight) | {:.1} | {stdio_rate:.1} |",
        ms(stdio50)
    );
    println!(
        "| HTTP with a token (8 sessions, one call each in flight) | {:.1} | {http_rate:.1} |",
        ms(http50)
    );
    println!("\n| measure | value |\n| --- | --- |");
    println!(
        "| server RSS idle (pool of 2 warm) | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| server RSS after 1,000 calls | {:.1} MiB |",
        after_rss as f64 / 1024.0
    );
    for (label, per_call, detail) in &api {
        println!("| Docker API requests per {label} execution | {per_call:.1} ({detail}) |");
    }
    let at8 = rates
        .iter()
        .find(|r| r.0 == 8)
        .map_or((0.0, 0.0), |r| (r.1, r.2));
    eprintln!("bench: installs");
    let (fresh, present50, present95) = installs().await?;
    println!("\n| install | p50 ms | p95 ms |\n| --- | ---: | ---: |");
    println!(
        "| fresh small install (one wheel, new layer) | {:.0} | |",
        ms(fresh)
    );
    println!(
        "| spec already present | {:.1} | {:.1} |",
        ms(present50),
        ms(present95)
    );
    println!("\n| target | result |\n| --- | --- |");
    println!(
        "| already-present install ≤ 100 ms | {:.1} ms — {} |",
        ms(present50),
        if present50 <= Duration::from_millis(100) {
            "met"
        } else {
            "missed"
        }
    );
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    // A session is frozen between calls (the engine's pause, so what it left running uses no
    // CPU outside a call): each call pays the unpause, one Docker request, on top.
    println!(
        "| session p50 ≤ warm p50 + 25 ms (the unpause of a frozen session) | {:.1} vs {:.1} ms — {} |",
        ms(session50),
        ms(warm50),
        verdict(session50 <= warm50 + Duration::from_millis(25))
    );
    println!(
        "| warm p50 ≤ 3× host | {:.2}× — {} |",
        ms(warm50) / ms(host50),
        verdict(warm50 <= host50 * 3)
    );
    println!(
        "| cold p50 ≤ 0.8× `docker run` | {:.2}× — {} (the start request alone is {:.2}×) |",
        ms(cold50) / ms(run50),
        verdict(ms(cold50) <= 0.8 * ms(run50)),
        ms(start50) / ms(run50)
    );
    println!(
        "| calls/s at 8 ≥ churn | cold {:.1}, warm {:.1} vs {churn:.1} — {} |",
        at8.0,
        at8.1,
        verdict(at8.0.max(at8.1) >= churn)
    );
    println!(
        "| idle RSS ≤ 20 MB | {:.1} MiB — {} |",
        idle_rss as f64 / 1024.0,
        verdict(idle_rss * 1024 <= 20_000_000)
    );
    eprintln!("bench: egress");
    let egress_rows = egress::rows(warm50, |sandbox| async move {
        let (p50, _) = latency(|| {
            let sandbox = sandbox.clone();
            async move {
                sandbox.settle().await;
                pool_full(&sandbox, 2).await;
                execute(&sandbox).await
            }
        })
        .await?;
        Ok(p50)
    })
    .await?;
    println!("{egress_rows}");
    eprintln!("bench: secrets");
    println!("{}", secrets::row().await?);
    Ok(())
}
