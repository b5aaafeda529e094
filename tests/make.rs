//! What the Makefile promises a user. `tests/prereqs.sh`, the check `make run` and every test
//! target run before they build anything: on this machine's real tools, with one of them taken
//! off `PATH` (a folder of links to every other program on it), it must stop naming exactly
//! what is missing and the command that installs it, one line each; with everything present it
//! passes. The engine it asks is the real one, and one that does not answer is named with the
//! next step. And `make run` serves MCP on a stdout that carries nothing else.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prereqs.sh");

/// A folder holding a link to every program on this process's `PATH` but `without`, first
/// found first, as `PATH` would resolve them; and `fakes` (name, shell script) in their place.
struct Path {
    dir: PathBuf,
}

impl Path {
    fn without(without: &[&str], fakes: &[(&str, &str)]) -> Path {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("pyexec-prereqs.{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        let mut seen: HashSet<std::ffi::OsString> = without.iter().map(|n| n.into()).collect();
        for (name, script) in fakes {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            seen.insert(name.into());
        }
        let path = std::env::var_os("PATH").expect("PATH is set");
        for folder in std::env::split_paths(&path) {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                if seen.insert(entry.file_name()) {
                    std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
                }
            }
        }
        Path { dir }
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(suite: &str, path: Option<&Path>, envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(SCRIPT).arg(suite).envs(envs.iter().copied());
    if let Some(path) = path {
        command.env("PATH", &path.dir);
        // bash itself from the trimmed PATH, so the script sees only that folder.
        command.env_remove("BASH_ENV");
    }
    command.output().expect("bash runs tests/prereqs.sh")
}

fn missing_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(": missing "))
        .map(String::from)
        .collect()
}

#[test]
fn make_test_passes_its_check_on_this_machine_and_names_the_other_suites() {
    let output = check("test", None, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(missing_lines(&output).is_empty(), "{stderr}");
    assert!(stderr.contains("make test-engines"), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout is make run's MCP channel");
}

#[test]
fn make_test_without_npm_stops_naming_npm_and_its_install_command() {
    let path = Path::without(&["npm"], &[]);
    let output = check("test", Some(&path), &[]);
    let lines = missing_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("make test: missing npm"), "{lines:?}");
    assert!(
        lines[0].contains("install: apt-get install npm"),
        "{lines:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("README.md, Set up"), "{stderr}");
}

#[test]
fn each_missing_tool_is_one_line() {
    // cargo finds subcommands in $CARGO_HOME/bin too, so a cargo without nextest is a fake.
    let no_nextest = "[ \"$1\" = nextest ] && { echo 'error: no such command: `nextest`' >&2; exit 101; }; exit 0";
    let path = Path::without(&["node", "npm"], &[("cargo", no_nextest)]);
    let lines = missing_lines(&check("test", Some(&path), &[]));
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, what) in lines.iter().zip(["cargo-nextest", "Node.js 20+", "npm"]) {
        assert!(line.contains(&format!("missing {what}")), "{lines:?}");
        assert!(line.contains("install: "), "{lines:?}");
    }
    assert!(lines[0].contains("cargo install cargo-nextest --locked"));
}

#[test]
fn a_python_that_cannot_make_a_venv_or_an_old_node_is_named_with_what_it_is() {
    let path = Path::without(
        &[],
        &[
            // An interpreter that fails the venv import, as Debian's python3 does without
            // python3-venv, and a Node.js older than the Inspector declares.
            ("python3", "exit 1"),
            (
                "node",
                "case \"$1\" in --version) echo v18.19.0 ;; *) exit 1 ;; esac",
            ),
        ],
    );
    let lines = missing_lines(&check("test", Some(&path), &[]));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("Python 3.10+ with venv"), "{lines:?}");
    assert!(lines[0].contains("python3-venv"), "{lines:?}");
    assert!(lines[1].contains("node is v18.19.0"), "{lines:?}");
}

#[test]
fn an_engine_that_does_not_answer_is_named_with_the_next_step() {
    let host = "unix:///nonexistent/docker.sock";
    let output = check("test", None, &[("DOCKER_HOST", host)]);
    let lines = missing_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("a Docker engine that answers at {host}")),
        "{lines:?}"
    );
    assert!(lines[0].contains("start it: "), "{lines:?}");
}

#[test]
fn a_rust_older_than_the_locked_dependencies_need_is_named() {
    let path = Path::without(
        &[],
        &[("rustc", "echo 'rustc 1.63.0 (4b91a6ea7 2022-08-08)'")],
    );
    let lines = missing_lines(&check("run", Some(&path), &[]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("Rust 1.89+ (rustc is 1.63)"), "{lines:?}");
    assert!(lines[0].contains("https://rustup.rs"), "{lines:?}");
}

#[test]
fn make_run_needs_neither_node_nor_python_nor_nextest() {
    // A cargo that has no nextest (and no other subcommand either: run asks for none).
    let path = Path::without(&["node", "npm", "python3"], &[("cargo", "exit 101")]);
    let output = check("run", Some(&path), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_engine_tests_name_their_own_tools() {
    let path = Path::without(&["openssl", "ssh-keygen"], &[]);
    let lines = missing_lines(&check("engines", Some(&path), &[]));
    assert!(
        lines.iter().any(
            |l| l.contains("missing openssl") && l.contains("install: apt-get install openssl")
        ),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("missing ssh and ssh-keygen")
                && l.contains("apt-get install openssh-client")),
        "{lines:?}"
    );
}

#[test]
fn an_unknown_suite_is_a_usage_error() {
    let output = check("everything", None, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("usage: "));
}

#[test]
fn make_run_serves_mcp_on_a_stdout_that_carries_nothing_else() {
    use std::io::{BufRead, Write};
    let mut command = Command::new("make");
    // As a user types it: not as a sub-make of `make test` (which would announce its
    // directory on stdout), and without the variables cargo sets for a test, which build
    // scripts watch (ring's reruns on CARGO_MANIFEST_DIR, then the whole crate rebuilds).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "MAKEOVERRIDES",
            "OUT_DIR",
            "CARGO",
        ]
        .contains(&&*name)
            || name.starts_with("NEXTEST")
            || (name.starts_with("CARGO_")
                && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&&*name)
                && !name.starts_with("CARGO_BUILD_"))
        {
            command.env_remove(&*name);
        }
    }
    let mut run = command
        .args(["run"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYEXEC_POOL_SIZE", "0")
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("make runs");
    let mut stdin = run.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"make-test","version":"0"}}}}}}"#
    )
    .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    drop(stdin);
    let status = run.wait().unwrap();
    let message: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("stdout's first line is not JSON-RPC ({e}): {first:?}"));
    assert_eq!(message["id"], 1, "{message}");
    assert_eq!(
        message["result"]["serverInfo"]["name"], "mcp-python-executor",
        "{message}"
    );
    assert!(status.success(), "make run ended with {status}");
}
