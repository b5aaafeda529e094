//! install_packages end to end, hermetically: wheels built by the test and served from a local
//! index on 127.0.0.1 (install containers use the host network to reach it), real pip, real
//! commits. One test also goes to the real PyPI when it is reachable.

mod common;

use std::time::Duration;

use common::{TestIndex, environment_with, local_flags, run, strs};
use mcp_python_executor::image::InstallError;
use tokio_util::sync::CancellationToken;

fn quiet(_: &str) {}

#[tokio::test]
async fn installed_packages_import_survive_a_restart_and_reinstall_is_a_no_op() {
    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();

    let before = run(&sandbox, "import pyexec_probe").await;
    assert_eq!(before.exit_code, 1, "not importable before the install");

    let lines = std::sync::Mutex::new(Vec::new());
    let collect = |line: &str| lines.lock().unwrap().push(line.to_string());
    let report = environment
        .install(&["PyExec_Probe==1.0"], &collect, &cancel)
        .await
        .unwrap();
    assert_eq!(report.installed, ["pyexec-probe==1.0"]);
    assert!(report.already_present.is_empty());
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Successfully installed"))
    );

    let after = run(&sandbox, "import pyexec_probe\nprint(pyexec_probe.VALUE)").await;
    assert_eq!(after.stdout, "pyexec-probe 1.0\n", "{}", after.stderr);
    let state = environment.ensure_loaded().await.unwrap();
    assert_eq!(state.packages["pyexec-probe"].1, "1.0");
    assert_eq!(state.depth, 1);

    // A second install of the same spec changes nothing and makes no layer.
    let again = environment
        .install(&["pyexec-probe"], &quiet, &cancel)
        .await
        .unwrap();
    assert!(again.installed.is_empty());
    assert_eq!(again.already_present, ["pyexec-probe==1.0"]);
    assert_eq!(
        environment.ensure_loaded().await.unwrap().image,
        state.image
    );

    // A new server on the same tag knows the package without installing anything.
    let (sandbox2, environment2, _same_tag) = common::environment_on(&cleanup.0, &strs(&flags));
    let reloaded = environment2.ensure_loaded().await.unwrap();
    assert_eq!(reloaded.image, state.image);
    assert_eq!(reloaded.packages, state.packages);
    let imported = run(&sandbox2, "import pyexec_probe\nprint(pyexec_probe.VALUE)").await;
    assert_eq!(imported.stdout, "pyexec-probe 1.0\n");

    common::assert_no_containers(&sandbox).await;
    common::assert_no_containers(&sandbox2).await;
}

#[tokio::test]
async fn a_failed_install_reports_pips_output_and_changes_nothing() {
    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    environment
        .install(&["pyexec-probe"], &quiet, &cancel)
        .await
        .unwrap();
    let state = environment.ensure_loaded().await.unwrap();

    let error = environment
        .install(&["pyexec-missing-package"], &quiet, &cancel)
        .await
        .unwrap_err();
    let InstallError::PipFailed { exit_code, tail } = &error else {
        panic!("expected a pip failure, got {error}");
    };
    assert_ne!(*exit_code, 0);
    assert!(tail.contains("No matching distribution"), "{tail}");
    assert!(error.to_string().contains("environment is unchanged"));

    assert_eq!(environment.ensure_loaded().await.unwrap(), state);
    let still = run(&sandbox, "import pyexec_probe\nprint('ok')").await;
    assert_eq!(still.stdout, "ok\n");
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn bad_specs_are_refused_before_any_container() {
    let (sandbox, environment, _cleanup) = environment_with(&[]);
    let cancel = CancellationToken::new();
    for bad in [
        vec!["--index-url=https://evil.example/simple"],
        vec!["pkg @ https://evil.example/pkg.whl"],
        vec!["numpy; python_version > '3'"],
        vec![""],
    ] {
        let error = environment
            .install(&bad, &quiet, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(error, InstallError::Spec(_)), "{bad:?}: {error}");
    }
    let none: [&str; 0] = [];
    assert!(matches!(
        environment.install(&none, &quiet, &cancel).await,
        Err(InstallError::Spec(_))
    ));
    common::assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn executions_do_not_wait_for_a_running_install() {
    // Every wheel download takes 4 s, so the install is still running while code executes.
    let index = TestIndex::start(&["pyexec-slow==1.0"], 4.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    let installing = {
        let environment = environment.clone();
        tokio::spawn(async move { environment.install(&["pyexec-slow"], &quiet, &cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same steps the execute_python tool takes: learn the environment, then run.
    environment.ensure_loaded().await.unwrap();
    let result = run(&sandbox, "print('not blocked')").await;
    assert_eq!(result.stdout, "not blocked\n");
    assert!(
        !installing.is_finished(),
        "the execution finished while the install ran"
    );
    let report = installing.await.unwrap().unwrap();
    assert_eq!(report.installed, ["pyexec-slow==1.0"]);
    let imported = run(&sandbox, "import pyexec_slow\nprint(pyexec_slow.VALUE)").await;
    assert_eq!(imported.stdout, "pyexec-slow 1.0\n");
}

#[tokio::test]
async fn the_layer_chain_is_bounded_by_a_rebuild_from_the_base() {
    let index = TestIndex::start(&["pyexec-a==1.0", "pyexec-b==1.0", "pyexec-c==1.0"], 0.0);
    let mut flags = local_flags(&index, &[]);
    flags.extend(["--max-layers".to_string(), "2".to_string()]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    for (name, rebuilt, depth) in [
        ("pyexec-a", false, 1),
        ("pyexec-b", false, 2),
        ("pyexec-c", true, 1),
    ] {
        let report = environment.install(&[name], &quiet, &cancel).await.unwrap();
        assert_eq!(report.rebuilt, rebuilt, "{name}");
        assert_eq!(
            environment.ensure_loaded().await.unwrap().depth,
            depth,
            "{name}"
        );
    }
    let all = run(
        &sandbox,
        "import pyexec_a, pyexec_b, pyexec_c\nprint('all three')",
    )
    .await;
    assert_eq!(all.stdout, "all three\n", "{}", all.stderr);
    let requested = environment.ensure_loaded().await.unwrap().requested;
    assert_eq!(requested, ["pyexec-a", "pyexec-b", "pyexec-c"]);
}

#[tokio::test]
async fn reset_goes_back_to_the_base() {
    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let cancel = CancellationToken::new();
    environment
        .install(&["pyexec-probe"], &quiet, &cancel)
        .await
        .unwrap();
    environment.reset().await.unwrap();
    let state = environment.ensure_loaded().await.unwrap();
    assert!(state.packages.is_empty());
    assert_eq!(state.depth, 0);
    assert_eq!(run(&sandbox, "import pyexec_probe").await.exit_code, 1);
}

/// The one test that needs the internet: skipped, with the reason printed, when PyPI cannot
/// be reached from this machine.
#[tokio::test]
async fn six_installs_from_the_real_pypi() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/six/', timeout=15)"])
        .output()
        .expect("python3 runs");
    if !probe.status.success() {
        eprintln!(
            "SKIPPED six_installs_from_the_real_pypi: PyPI is unreachable from this machine ({})",
            String::from_utf8_lossy(&probe.stderr)
                .lines()
                .last()
                .unwrap_or("no detail")
        );
        return;
    }
    let (sandbox, environment, _cleanup) = environment_with(&[]);
    let report = environment
        .install(&["six==1.16.0"], &quiet, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.installed, ["six==1.16.0"]);
    let result = run(&sandbox, "import six\nprint(six.__version__)").await;
    assert_eq!(result.stdout, "1.16.0\n");
}

/// A server started with `PREINSTALLED_PACKAGES` (and the index flags as variables) on a tag
/// of its own, driven over MCP.
async fn server_preinstalling(
    index: &TestIndex,
    packages: &str,
    tag: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::ServiceExt;
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
        .configure(|cmd| {
            cmd.env("PREINSTALLED_PACKAGES", packages)
                .env("PYEXEC_ENV_TAG", tag)
                .env("PYEXEC_INSTALL_NETWORK", "host")
                .env("PIP_INDEX_URL", &index.url)
                .stderr(std::process::Stdio::null());
        });
    ().serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("MCP handshake")
}

async fn execute(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    code: &str,
) -> Vec<String> {
    let params = rmcp::model::CallToolRequestParams::new("execute_python").with_arguments(
        serde_json::json!({ "code": code })
            .as_object()
            .unwrap()
            .clone(),
    );
    let answer = client.call_tool(params).await.unwrap();
    answer
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test]
async fn an_execution_right_after_start_waits_for_the_preinstall() {
    // Each wheel download takes 3 s: the first call arrives well before the install ends.
    let index = TestIndex::start(&["pyexec-ready==1.0"], 3.0);
    let tag = format!(
        "mcp-python-executor/env:test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let _cleanup = common::TagCleanup(tag.clone(), "none".to_string());
    let client = server_preinstalling(&index, "pyexec-ready==1.0", &tag).await;
    // Meanwhile list_packages says that an install is under way.
    let listing = async {
        for _ in 0..40 {
            let listed = client
                .call_tool(rmcp::model::CallToolRequestParams::new("list_packages"))
                .await
                .unwrap();
            let text: Vec<String> = listed
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            if text
                .iter()
                .any(|t| t.starts_with("An install is in progress (pyexec-ready==1.0"))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let (answer, listed) = tokio::join!(
        execute(&client, "import pyexec_ready\nprint(pyexec_ready.VALUE)"),
        listing
    );
    assert_eq!(answer, ["stdout:\npyexec-ready 1.0\n"]);
    assert!(listed, "list_packages said the install was in progress");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_failed_preinstall_is_said_in_one_line_and_the_call_still_runs() {
    let index = TestIndex::start(&["pyexec-elsewhere==1.0"], 0.0);
    let tag = format!(
        "mcp-python-executor/env:test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let _cleanup = common::TagCleanup(tag.clone(), "none".to_string());
    let client = server_preinstalling(&index, "pyexec-nowhere==1.0", &tag).await;
    let answer = execute(&client, "print('ran')").await;
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert!(
        answer[0].starts_with(
            "note: PREINSTALLED_PACKAGES (pyexec-nowhere==1.0) could not be installed"
        ),
        "{answer:?}"
    );
    assert_eq!(answer[0].lines().count(), 1, "{answer:?}");
    assert_eq!(answer[1], "stdout:\nran\n");
    client.cancel().await.unwrap();
}

/// A layer changes packages and nothing else, on every engine: the environment image has the
/// base's user, entrypoint, command, working directory and environment (bar the `container`,
/// `TERM` and `HOSTNAME` Podman adds to every container) and the layer's labels,
/// with the install container's ownership labels blanked. Podman's compatible commit ignores
/// the config Docker takes from the request body; there it is sent as `changes` and checked
/// after the commit (`make test-podman` runs this suite on Podman).
#[tokio::test]
async fn a_layer_has_the_bases_config_and_its_own_labels_on_every_engine() {
    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    environment
        .install(&["pyexec-probe==1.0"], &quiet, &CancellationToken::new())
        .await
        .unwrap();
    let state = environment.ensure_loaded().await.unwrap();
    let docker = common::docker();
    let config = |image: String| {
        let docker = docker.clone();
        async move { docker.inspect_image(&image).await.unwrap().config.unwrap() }
    };
    let layer = config(state.image.clone()).await;
    let base = config(sandbox.config().image.clone()).await;
    assert_eq!(layer.user, base.user);
    assert_eq!(
        layer.entrypoint.unwrap_or_default(),
        base.entrypoint.unwrap_or_default()
    );
    assert_eq!(layer.cmd, base.cmd);
    assert_eq!(layer.working_dir, base.working_dir);
    let mut env: Vec<String> = layer
        .env
        .unwrap_or_default()
        .into_iter()
        .filter(|pair| {
            !["container=", "TERM=", "HOSTNAME="]
                .iter()
                .any(|name| pair.starts_with(name))
        })
        .collect();
    let mut base_env = base.env.unwrap_or_default();
    env.sort();
    base_env.sort();
    assert_eq!(env, base_env);
    let labels = layer.labels.unwrap_or_default();
    let packages: serde_json::Value =
        serde_json::from_str(&labels["mcp-python-executor.packages"]).unwrap();
    assert_eq!(packages["pyexec-probe"], "1.0", "{packages}");
    assert_eq!(
        labels["mcp-python-executor.requested"],
        r#"["pyexec-probe==1.0"]"#
    );
    assert_eq!(labels["mcp-python-executor.depth"], "1");
    assert_eq!(
        labels["mcp-python-executor"], "",
        "ownership is not inherited"
    );
    assert_eq!(labels["mcp-python-executor.deadline"], "");
    let run_as = run(&sandbox, "import os, pyexec_probe; print(os.getuid() >= 1500000000, sorted(k for k in os.environ if k in ('container', 'TERM')))").await;
    assert_eq!(run_as.stdout, "True []\n", "{}", run_as.stderr);
    common::assert_still_serving(&sandbox).await;
}

/// A session keeps the image it started from: after an install, an import of the new package
/// fails there with a note that the session predates the install, and a new session has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_packages_and_says_when_it_predates_an_install() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ContentBlock};
    use serde_json::{Value, json};

    let index = TestIndex::start(&["pyexec-probe==1.0"], 0.0);
    let flags = local_flags(&index, &[]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (input, output) = tokio::io::split(theirs);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mcp_python_executor::serving::pipes(
        input,
        output,
        sandbox.clone(),
        environment,
        async {
            let _ = stopped.await;
        },
    ));
    let client = ().serve(ours).await.unwrap();
    let tool = async |name: &'static str, arguments: Value| {
        let params =
            CallToolRequestParams::new(name).with_arguments(arguments.as_object().unwrap().clone());
        let result = client.call_tool(params).await.unwrap();
        let text = result
            .content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text(t) => Some(t.text.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        (result, text)
    };
    let (opened, _) = tool("create_session", json!({})).await;
    let old = opened.structured_content.unwrap()["session_id"].clone();
    tool(
        "execute_python",
        json!({"code": "x = 1", "session_id": old}),
    )
    .await;
    let (installed, said) = tool("install_packages", json!({"packages": ["pyexec-probe"]})).await;
    assert_eq!(installed.is_error, Some(false), "{said}");

    let probe = "import pyexec_probe\nprint(pyexec_probe.VALUE, x)";
    let (failed, said) = tool("execute_python", json!({"code": probe, "session_id": old})).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(
        said.contains("ModuleNotFoundError") && said.contains("started before the last install"),
        "{said}"
    );
    // Its state is intact, and a new session sees the package.
    let (_, said) = tool(
        "execute_python",
        json!({"code": "print(x)", "session_id": old}),
    )
    .await;
    assert!(said.contains("1\n"), "{said}");
    let (opened, _) = tool("create_session", json!({})).await;
    let new = opened.structured_content.unwrap()["session_id"].clone();
    let (worked, said) = tool(
        "execute_python",
        json!({"code": "x = 2\n".to_string() + probe, "session_id": new}),
    )
    .await;
    assert_eq!(worked.is_error, Some(false), "{said}");
    assert!(said.contains("pyexec-probe 1.0 2"), "{said}");
    // A failing import in an up-to-date session gets no such note.
    let (_, said) = tool(
        "execute_python",
        json!({"code": "import nothing_here", "session_id": new}),
    )
    .await;
    assert!(!said.contains("started before"), "{said}");

    client.cancel().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    common::assert_no_containers(&sandbox).await;
}

/// A preinstall stopped mid-install (serving's start-up task dropped at shutdown) is over all
/// the same: calls waiting for it are told the server is shutting down instead of waiting on,
/// and its install container is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preinstall_stopped_at_shutdown_is_over_and_leaves_no_container() {
    use mcp_python_executor::image::Preinstall;

    let index = TestIndex::start(&["pyexec-probe==1.0"], 30.0);
    let flags = local_flags(&index, &["--preinstalled", "pyexec-probe==1.0"]);
    let (sandbox, environment, _cleanup) = environment_with(&strs(&flags));
    let mut state = environment.preinstall_state();
    let installing = environment.clone();
    let preinstall = tokio::spawn(async move { installing.preinstall().await });
    tokio::time::timeout(Duration::from_secs(60), async {
        while *state.borrow_and_update() != Preinstall::Running {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the preinstall starts");
    // Its install container is running (pip waits on the slow index) when it is stopped.
    tokio::time::timeout(Duration::from_secs(60), async {
        while common::containers_of(&sandbox).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the install container starts");
    preinstall.abort();
    let _ = preinstall.await;
    match &*environment.preinstall_state().borrow() {
        Preinstall::Failed(why) => assert!(why.contains("shutting down"), "{why}"),
        other => panic!("the preinstall must be over: {other:?}"),
    }
    // Installs hold no slot: the shutdown drain is what waits for their removal.
    sandbox.shutdown(Duration::from_secs(15)).await;
    let left = common::containers_of(&sandbox).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}
