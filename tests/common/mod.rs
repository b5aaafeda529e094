//! Helpers shared by the integration tests: a sandbox with chosen settings, a one-line way to
//! run code, and a look at which containers a sandbox instance still has. Everything here talks
//! to the real Docker daemon and runs the real image built by `make image`.
#![allow(dead_code)]

pub mod netns;

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use clap::Parser;
use mcp_python_executor::config::SandboxArgs;
use mcp_python_executor::sandbox::{
    ExecutionRequest, ExecutionResult, LABEL_OWNER, Sandbox, SandboxError,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: SandboxArgs,
}

/// A sandbox configured as if started with these flags (environment fallbacks apply too).
pub fn sandbox_with(flags: &[&str]) -> TestSandbox {
    let argv = std::iter::once("mcp-python-executor").chain(flags.iter().copied());
    let config = Flags::try_parse_from(argv).expect("valid test flags").args;
    TestSandbox(Arc::new(Sandbox::new(
        config.resolve().expect("valid test config"),
    )))
}

/// A sandbox that removes whatever containers it still has when the test ends.
///
/// A call answers before its container is removed (the removal finishes on a background task,
/// as in the server, which waits for it at shutdown). A test's runtime ends with the test and
/// takes such tasks with it, so without this sweep tests that do not end with
/// [`assert_no_containers`] would leave containers behind for the reaper.
/// It derefs to the `Arc`, for tests that share the sandbox (a pool's refill task, calls
/// from several tasks).
pub struct TestSandbox(Arc<Sandbox>);

impl std::ops::Deref for TestSandbox {
    type Target = Arc<Sandbox>;
    fn deref(&self) -> &Arc<Sandbox> {
        &self.0
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        sweep(self.0.instance());
    }
}

/// Removes every container owned by `instance`, synchronously (usable from `Drop`).
pub fn sweep(instance: &str) {
    let filter = format!("label={LABEL_OWNER}={instance}");
    let Ok(listed) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        // Sessions are paused between calls, and gVisor cannot kill a paused sandbox.
        let _ = std::process::Command::new("docker")
            .arg("unpause")
            .args(&ids)
            .output();
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force"])
            .args(&ids)
            .output();
    }
}

/// True when the tests run under gVisor (`PYEXEC_RUNTIME=runsc`, as `make test-gvisor` does),
/// where the kernel answers some questions differently.
pub fn gvisor() -> bool {
    std::env::var("PYEXEC_RUNTIME").is_ok_and(|r| r == "runsc")
}

/// Whether `uid` is one of the per-call uids (never 0, the image's users, or one a host uses).
pub fn is_call_uid(uid: u32) -> bool {
    mcp_python_executor::sandbox::CALL_UIDS.contains(&uid)
}

/// A sandbox with the default limits.
pub fn sandbox() -> TestSandbox {
    sandbox_with(&[])
}

/// Runs code with no stdin and fails the test on a sandbox error.
pub async fn run(sandbox: &Sandbox, code: &str) -> ExecutionResult {
    try_run(sandbox, ExecutionRequest::new(code))
        .await
        .unwrap_or_else(|e| panic!("execution failed: {e}"))
}

pub async fn try_run(
    sandbox: &Sandbox,
    request: ExecutionRequest,
) -> Result<ExecutionResult, SandboxError> {
    sandbox.execute(&request, &CancellationToken::new()).await
}

pub fn docker() -> Docker {
    Docker::connect_with_defaults().expect("Docker client")
}

/// Names of all containers (running or not) that carry this sandbox's owner label.
pub async fn containers_of(sandbox: &Sandbox) -> Vec<String> {
    let filter = format!("{LABEL_OWNER}={}", sandbox.instance());
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
        ..Default::default()
    };
    let docker = docker()
        .negotiate_version()
        .await
        .expect("Docker reachable");
    mcp_python_executor::engine::list_containers(&docker, options)
        .await
        .expect("list containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

/// Asserts that the sandbox left no container behind, once every call's removal (which
/// finishes just after the call answers) is done.
pub async fn assert_no_containers(sandbox: &Sandbox) {
    sandbox.settle().await;
    let left = containers_of(sandbox).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[derive(Parser)]
struct AllFlags {
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    environment: mcp_python_executor::config::EnvironmentArgs,
}

/// A sandbox and its package environment under a tag of the test's own, configured as if
/// started with these flags. The tag's images are removed when the returned cleanup drops.
pub fn environment_with(
    flags: &[&str],
) -> (
    std::sync::Arc<Sandbox>,
    std::sync::Arc<mcp_python_executor::image::Environment>,
    TagCleanup,
) {
    let tag = format!(
        "mcp-python-executor/env:test-{}",
        uuid::Uuid::new_v4().simple()
    );
    environment_on(&tag, flags)
}

/// Like [`environment_with`], on an existing tag: a restarted server.
pub fn environment_on(
    tag: &str,
    flags: &[&str],
) -> (
    Arc<Sandbox>,
    Arc<mcp_python_executor::image::Environment>,
    TagCleanup,
) {
    let argv = ["mcp-python-executor", "--env-tag", tag]
        .into_iter()
        .chain(flags.iter().copied());
    let parsed = AllFlags::try_parse_from(argv).expect("valid test flags");
    let sandbox = Arc::new(Sandbox::new(parsed.sandbox.resolve().unwrap()));
    let environment = Arc::new(mcp_python_executor::image::Environment::new(
        sandbox.clone(),
        parsed.environment.resolve().unwrap(),
    ));
    let cleanup = TagCleanup(tag.to_string(), sandbox.instance().to_string());
    (sandbox, environment, cleanup)
}

/// Removes the sandbox's remaining containers (see [`TestSandbox`]) and then the environment
/// tag's image when dropped, even when the test failed.
pub struct TagCleanup(pub String, pub String);

impl Drop for TagCleanup {
    fn drop(&mut self) {
        sweep(&self.1);
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "--force", &self.0])
            .output();
    }
}

/// A local package index serving freshly built wheels on 127.0.0.1 (see fixtures/index_server.py).
pub struct TestIndex {
    child: std::process::Child,
    /// The index's base URL, for `--pip-index-url`.
    pub url: String,
}

impl TestIndex {
    /// Serves `NAME==VERSION` wheels; `delay` seconds before each wheel download.
    pub fn start(packages: &[&str], delay: f64) -> Self {
        use std::io::BufRead;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/index_server.py"
        );
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(format!("--delay={delay}"))
            .args(packages)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the test index");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("index prints its port");
        let port: u16 = line.trim().parse().expect("a port number");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/simple"),
        }
    }
}

/// Flags that point installs at `index` (install containers on the host network reach it on
/// 127.0.0.1), plus `extra`.
pub fn local_flags(index: &TestIndex, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--install-network".to_string(),
        "host".to_string(),
        "--pip-index-url".to_string(),
        index.url.clone(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// Borrows owned flags as the `&[&str]` the builders take.
pub fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

impl Drop for TestIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the sandbox still serves a normal call, then that it left no container behind.
pub async fn assert_still_serving(sandbox: &Sandbox) {
    let result = run(sandbox, "print('still serving')").await;
    assert_eq!(
        result.stdout, "still serving\n",
        "the next call failed: {result:?}"
    );
    assert_no_containers(sandbox).await;
}

/// This process's resident set size, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

/// Runs the built binary's `exec` with `args`, `code` on its stdin and `envs` added, and
/// returns what it printed and its status.
pub fn exec_with_stdin(args: &[&str], code: &str, envs: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
        .arg("exec")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Plants, in the working directory (/tmp), a module of each name the supervisor imports once
/// the program is running (json when files come back, and the rest it imports at all), each
/// of which says so when any process but the program's own imports it; leaves a file in
/// /tmp/outputs, so the supervisor collects files after the program; and checks that the
/// program itself still imports a module it wrote next to its code, as `python3 main.py` would.
pub const PLANTER: &str = r#"
import os
me = os.getpid()
for name in ("json", "select", "time", "stat", "traceback", "io", "types", "gc", "atexit",
             "linecache", "importlib", "_ctypes", "sitecustomize", "encodings", "errno"):
    with open(f"/tmp/{name}.py", "w") as f:
        f.write(f"import os\nif os.getpid() != {me}:\n"
                f"    os.write(2, b'HIJACKED: {name} ran in pid %d\\n' % os.getpid())\n")
with open("/tmp/helper_of_mine.py", "w") as f:
    f.write("VALUE = 42\n")
import helper_of_mine
print("own module:", helper_of_mine.VALUE)
os.makedirs("/tmp/outputs", exist_ok=True)
with open("/tmp/outputs/result.txt", "w") as f:
    f.write("a file, so the supervisor collects")
"#;

/// What a program tries against its supervisor (PID 1), each attempt reported on one line:
/// its descriptors (the container's stdin carries the call's header and token; under gVisor a
/// process of the supervisor's uid could open them whatever its dumpability), its environment,
/// its memory, and signals. Plus who each of them is.
pub const SUPERVISOR_PROBE: &str = r#"
import os, signal
def status(pid):
    fields = dict(l.split(':', 1) for l in open('/proc/%s/status' % pid) if ':' in l)
    return fields['Uid'].split()[0], fields['CapEff'].strip(), fields['CapPrm'].strip(), fields['CapBnd'].strip()
me, init = status('self'), status(1)
print('program', me[0], 'caps', *me[1:])
print('distinct', me[0] != init[0], init[0] != '0')
for fd in (0, 1, 2):
    for mode, name in ((os.O_RDONLY, 'read'), (os.O_WRONLY, 'write')):
        try:
            os.close(os.open('/proc/1/fd/%d' % fd, mode | os.O_NONBLOCK))
            print('OPENED fd', fd, name)
        except OSError as error:
            print('fd', fd, name, 'refused', error.errno)
try:
    print('fd list', os.listdir('/proc/1/fd'))
except OSError as error:
    print('fd list refused', error.errno)
try:
    environ = open('/proc/1/environ', 'rb').read()
    print('environ', 'READ' if b'=' in environ else 'blank', len(environ))
except OSError as error:
    print('environ refused', error.errno)
try:
    open('/proc/1/mem', 'rb').read(1)
    print('mem READ')
except OSError as error:
    print('mem refused', error.errno)
for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP):
    try:
        os.kill(1, sig)
        print('SIGNALLED', int(sig))
    except OSError as error:
        print('signal', int(sig), 'refused', error.errno)
"#;

/// The supervisor's answer to [`SUPERVISOR_PROBE`]: another uid than the program's (which has
/// no capability, bounding set included), none of its descriptors open to the program under
/// any runtime (gVisor lists their numbers), its environment unreadable (runc) or blanked
/// (gVisor shows /proc/1/environ to every uid), its memory closed, no signal delivered.
pub fn assert_supervisor_out_of_reach(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 13, "{stdout}");
    let program: Vec<&str> = lines[0].split_whitespace().collect();
    assert!(is_call_uid(program[1].parse().unwrap()), "{stdout}");
    assert_eq!(
        program[3..],
        ["0000000000000000"; 3],
        "no capability in the program: {stdout}"
    );
    assert_eq!(lines[1], "distinct True True", "{stdout}");
    assert!(!stdout.contains("OPENED"), "{stdout}");
    // gVisor lists the descriptors' numbers (the folder is 0555 there), and opens none.
    assert!(stdout.contains("fd list refused") || gvisor(), "{stdout}");
    assert!(
        stdout.contains("environ refused") || stdout.contains("environ blank"),
        "{stdout}"
    );
    assert!(stdout.contains("mem refused"), "{stdout}");
    assert!(!stdout.contains("SIGNALLED"), "{stdout}");
    assert_eq!(
        stdout.matches("refused 1\n").count(),
        4,
        "EPERM for each signal: {stdout}"
    );
}
