//! install_packages against a hostile package author: wheels built by the test (see
//! fixtures/index_server.py) that try to run code during installs, hijack the binaries the
//! entrypoint runs, write outside the venv or plant a pip.conf. Each is refused or harmless,
//! the environment is unchanged when refused, and the next call works. Real Docker, real pip.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use bollard::query_parameters::ListImagesOptions;
use common::{TestIndex, environment_with, local_flags, run, strs};
use mcp_python_executor::image::InstallError;
use mcp_python_executor::sandbox::ExecutionRequest;
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

fn quiet(_: &str) {}

/// What an execution sees of its identity (a uid of its own each call: compared by kind) and
/// environment.
const IDENTITY: &str = "import os, sys, json\n\
uid = os.getuid()\n\
print(json.dumps({'env': sorted(os.environ.items()), 'ids': [uid == os.getgid() == os.geteuid(), \
os.getgroups() == [], 1500000000 <= uid < 2000000000], 'cwd': os.getcwd(), 'exe': sys.executable, \
'prefix': sys.prefix, 'umask': os.umask(0o22)}))";

#[tokio::test]
async fn a_pth_file_never_runs_during_an_install_and_runs_unprivileged_in_executions() {
    let index = TestIndex::start(&["pyexec-pth==1.0:pth", "pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    let lines = Mutex::new(Vec::<String>::new());
    let collect = |line: &str| lines.lock().unwrap().push(line.to_string());
    environment
        .install(&["pyexec-pth"], &collect, &cancel)
        .await
        .unwrap();
    // The next install starts the environment's interpreter: the hook must not run there.
    environment
        .install(&["pyexec-probe"], &collect, &cancel)
        .await
        .unwrap();
    let seen = lines.lock().unwrap().join("\n");
    assert!(
        !seen.contains("PTH-RAN"),
        "a .pth ran during an install:\n{seen}"
    );
    assert!(
        seen.contains("Successfully installed pyexec-probe"),
        "{seen}"
    );

    let result = run(
        &sandbox,
        "import os, pyexec_pth\nprint(os.path.exists('/opt/venv/pth-ran'), os.access('/opt/venv', os.W_OK))",
    )
    .await;
    assert_eq!(result.stdout, "False False\n", "{result:?}");
    // In executions it runs in the program's process (twice: Debian's Python 3.11 runs a
    // venv's `.pth` files once for the venv and once for its prefix, as at any start), as the
    // call's own uid: never as root or the installer, and never in the supervisor (pid 1),
    // which holds the call's token.
    let runs: Vec<(u32, u32)> = result
        .stderr
        .split("PTH-RAN ")
        .skip(1)
        .map(|rest| {
            let mut fields = rest
                .split_whitespace()
                .map(|f| f.split('=').nth(1).and_then(|v| v.parse().ok()).unwrap());
            (fields.next().unwrap(), fields.next().unwrap())
        })
        .collect();
    assert!(!runs.is_empty(), "the hook did not run: {}", result.stderr);
    for &(uid, pid) in &runs {
        assert!(common::is_call_uid(uid), "{uid}");
        assert_ne!(pid, 1, "a .pth ran in the supervisor: {}", result.stderr);
        assert_eq!(pid, runs[0].1, "one process: {}", result.stderr);
    }
    common::assert_no_containers(&sandbox).await;
}

/// A package's `.pth` runs in the program's process as it starts, before the call's payload
/// has arrived: were that process's stdin the container's, a thread started there would race
/// the supervisor for the header (the call's token) and the code. Its stdin is the
/// supervisor's pipe, which carries only what follows the code; the supervisor's own stdin
/// cannot be opened.
#[tokio::test]
async fn a_package_never_sees_the_calls_header_nor_the_supervisors_stdin() {
    let index = TestIndex::start(&["pyexec-stdin==1.0:stdin"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    environment
        .install(&["pyexec-stdin"], &quiet, &cancel)
        .await
        .unwrap();
    for _ in 0..3 {
        let request = ExecutionRequest::new("import time\ntime.sleep(0.5)\nprint('ran')")
            .with_input(["mine"]);
        let result = sandbox.execute(&request, &cancel).await.unwrap();
        let stderr = result.stderr.to_string();
        assert_eq!(
            (result.stdout.to_string(), result.exit_code),
            ("ran\n".to_string(), 0),
            "{stderr}"
        );
        assert!(stderr.contains("STDIN-THIEF init refused 13"), "{stderr}");
        let own: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("STDIN-THIEF own"))
            .collect();
        assert_eq!(own, ["STDIN-THIEF own b'mine\\n'"], "{stderr}");
    }
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn scripts_named_like_the_entrypoints_binaries_change_nothing() {
    let index = TestIndex::start(
        &["pyexec-scripts==1.0:scripts", "pyexec-python3==1.0:python3"],
        0.0,
    );
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    environment
        .install(&["pyexec-scripts"], &quiet, &cancel)
        .await
        .unwrap();
    let shadowed = run(
        &sandbox,
        "import shutil\nprint(shutil.which('timeout'))\nprint('calls still run')",
    )
    .await;
    assert_eq!(
        shadowed.stdout, "/opt/venv/bin/timeout\ncalls still run\n",
        "{shadowed:?}"
    );
    assert_eq!(shadowed.exit_code, 0);

    let state = environment.ensure_loaded().await.unwrap();
    let error = environment
        .install(&["pyexec-python3"], &quiet, &cancel)
        .await
        .unwrap_err();
    let InstallError::Refused { path, .. } = &error else {
        panic!("expected a refusal, got {error}");
    };
    assert_eq!(path, "/opt/venv/bin/python3", "{error}");
    assert!(error.to_string().contains("unchanged"), "{error}");
    assert_eq!(environment.ensure_loaded().await.unwrap(), state);
    let after = run(&sandbox, "import sys\nprint(sys.executable)").await;
    assert_eq!(after.stdout, "/opt/venv/bin/python3\n", "{after:?}");
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn files_aimed_outside_the_venv_and_a_pip_conf_are_refused() {
    let index = TestIndex::start(
        &["pyexec-escape==1.0:escape", "pyexec-pipconf==1.0:pipconf"],
        0.0,
    );
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    let state = environment.ensure_loaded().await.unwrap();

    // pip itself refuses paths that leave its scheme; were it not to, the installer could not
    // write there, and the layer check would refuse it.
    let escape = environment
        .install(&["pyexec-escape"], &quiet, &cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(
            escape,
            InstallError::PipFailed { .. } | InstallError::Refused { .. }
        ),
        "{escape}"
    );
    let pipconf = environment
        .install(&["pyexec-pipconf"], &quiet, &cancel)
        .await
        .unwrap_err();
    let InstallError::Refused { path, .. } = &pipconf else {
        panic!("expected a refusal, got {pipconf}");
    };
    assert_eq!(path, "/opt/venv/pip.conf");

    assert_eq!(environment.ensure_loaded().await.unwrap(), state);
    let result = run(
        &sandbox,
        "import os\nprint([os.path.exists(p) for p in ('/var/tmp/escaped', '/etc/escaped', \
         '/opt/venv/pip.conf')])",
    )
    .await;
    assert_eq!(result.stdout, "[False, False, False]\n", "{result:?}");
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn an_execution_sees_the_same_environment_and_identity_before_and_after_an_install() {
    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, cleanup) = environment_with(&strs(&flags));
    let before = run(&sandbox, IDENTITY).await;
    assert_eq!(before.exit_code, 0, "{before:?}");
    environment
        .install(&["pyexec-probe"], &quiet, &CancellationToken::new())
        .await
        .unwrap();
    let after = run(&sandbox, IDENTITY).await;
    assert_eq!(before.stdout, after.stdout);

    // The committed image's own config is the base's, not the install container's.
    let docker = common::docker().negotiate_version().await.unwrap();
    let config = |image: String| {
        let docker = docker.clone();
        async move {
            let config = docker.inspect_image(&image).await.unwrap().config.unwrap();
            // In any order, bar what Podman adds to every container (and so to a commit).
            let mut env: Vec<String> = config.env.unwrap_or_default();
            env.retain(|pair| {
                !["container=", "TERM=", "HOSTNAME="]
                    .iter()
                    .any(|name| pair.starts_with(name))
            });
            env.sort();
            (
                config.user,
                env,
                config.cmd,
                config.working_dir,
                config.entrypoint.unwrap_or_default(),
            )
        }
    };
    let base = sandbox.config().image.clone();
    assert_eq!(config(cleanup.0.clone()).await, config(base).await);
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_source_only_package_is_answered_with_the_cause_and_the_flag() {
    let index = TestIndex::start(&["pyexec-sourceonly==1.0:sdist"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let error = environment
        .install(&["pyexec-sourceonly"], &quiet, &CancellationToken::new())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, InstallError::NoWheel { .. }), "{message}");
    assert!(message.contains("pyexec-sourceonly"), "{message}");
    assert!(message.contains("only as source"), "{message}");
    assert!(message.contains("--allow-sdist"), "{message}");
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_layer_over_the_size_limit_is_refused_before_it_is_committed() {
    let index = TestIndex::start(&["pyexec-big==1.0:big"], 0.0);
    let flags = local_flags(&index, &["--max-layer-size", "1m"]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let state = environment.ensure_loaded().await.unwrap();
    let error = environment
        .install(&["pyexec-big"], &quiet, &CancellationToken::new())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, InstallError::TooLarge { .. }), "{message}");
    assert!(message.contains("--max-layer-size"), "{message}");
    assert_eq!(environment.ensure_loaded().await.unwrap(), state);
    assert_eq!(run(&sandbox, "import pyexec_big").await.exit_code, 1);
    common::assert_no_containers(&sandbox).await;
}

/// Images carrying this environment tag's label, and how many of them are dangling.
async fn images_of(tag: &str) -> (usize, usize) {
    let docker = common::docker().negotiate_version().await.unwrap();
    let list = |dangling: bool| {
        let mut filters = HashMap::from([(
            "label".to_string(),
            vec![format!("mcp-python-executor.env={tag}")],
        )]);
        if dangling {
            filters.insert("dangling".to_string(), vec!["true".to_string()]);
        }
        ListImagesOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }
    };
    let all = docker.list_images(Some(list(false))).await.unwrap().len();
    let dangling = docker.list_images(Some(list(true))).await.unwrap().len();
    (all, dangling)
}

#[tokio::test]
async fn many_installs_with_the_pool_on_leave_only_the_current_chain() {
    let names: Vec<String> = (0..25).map(|i| format!("pyexec-g{i}==1.0")).collect();
    let index = TestIndex::start(&strs(&names), 0.0);
    let flags = local_flags(&index, &["--pool-size", "2", "--max-layers", "4"]);
    let (sandbox, environment, cleanup) = environment_with(&strs(&flags));
    environment.ensure_loaded().await.unwrap();
    sandbox.start_pool();
    let cancel = CancellationToken::new();
    for i in 0..25 {
        let name = format!("pyexec-g{i}");
        environment
            .install(&[&name], &quiet, &cancel)
            .await
            .unwrap();
        // Calls take warm containers of the image of the moment, as a client's would.
        let imported = run(&sandbox, &format!("import pyexec_g{i}")).await;
        assert_eq!(imported.exit_code, 0, "{imported:?}");
    }
    let depth = environment.ensure_loaded().await.unwrap().depth as usize;
    let mut seen = (0, 0);
    for _ in 0..60 {
        seen = images_of(&cleanup.0).await;
        if seen == (depth, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        seen,
        (depth, 0),
        "(images of the tag, dangling) once the pool moved on; the chain is {depth} deep"
    );
    let all = run(&sandbox, "import pyexec_g0, pyexec_g24\nprint('both')").await;
    assert_eq!(all.stdout, "both\n", "{all:?}");
}

/// Containers installing into `tag`, by any server.
fn install_containers(tag: &str) -> Vec<String> {
    let filter = format!("label=mcp-python-executor.install={tag}");
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn sigterm_during_an_install_leaves_no_container() {
    use tokio::io::AsyncWriteExt;
    let index = TestIndex::start(&["pyexec-slow==1.0"], 30.0);
    let tag = format!(
        "mcp-python-executor/env:test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let state = tempdir();
    let mut server = tokio::process::Command::new(BINARY)
        .args([
            "--env-tag",
            &tag,
            "--install-network",
            "host",
            "--pool-size",
            "0",
        ])
        .args(["--pip-index-url", &index.url, "--state-dir", &state])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"install_packages","arguments":{"packages":["pyexec-slow"]}}}"#,
    ] {
        stdin.write_all(message.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    let mut started = false;
    for _ in 0..100 {
        if !install_containers(&tag).is_empty() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started, "the install container never appeared");
    let pid = server.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    let left = install_containers(&tag);
    drop(stdin);
    assert!(
        left.is_empty(),
        "left behind after SIGTERM ({status}): {left:?}"
    );
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &tag])
        .output();
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("pyexec-state-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[tokio::test]
async fn two_servers_installing_into_one_tag_at_once_lose_nothing() {
    // Each wheel download takes a second, so the two installs overlap unless serialized.
    let index = TestIndex::start(&["pyexec-left==1.0", "pyexec-right==1.0"], 1.0);
    let tag = format!(
        "mcp-python-executor/env:test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let state = tempdir();
    let install = |name: &str| {
        Command::new(BINARY)
            .args(["packages", "install", name, "--env-tag", &tag])
            .args(["--install-network", "host", "--pip-index-url", &index.url])
            .args(["--state-dir", &state])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (left, right) = (install("pyexec-left"), install("pyexec-right"));
    for child in [left, right] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = Command::new(BINARY)
        .args(["packages", "list", "--env-tag", &tag])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("pyexec-left==1.0"), "{listed}");
    assert!(listed.contains("pyexec-right==1.0"), "{listed}");
    let mut exec = Command::new(BINARY)
        .args(["exec", "--env-tag", &tag, "--pool-size", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    exec.stdin
        .take()
        .unwrap()
        .write_all(b"import pyexec_left, pyexec_right\nprint('both')")
        .unwrap();
    let out = exec.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "both\n");
    // Each layer the other built on is still there: nobody removed an image in use.
    let (images, dangling) = images_of(&tag).await;
    assert_eq!((images, dangling), (2, 0));
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &tag])
        .output();
}
