//! The binary from a terminal: `exec` mirrors the program, `--help` explains, bad settings
//! and an unreachable daemon produce errors that say what to do.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
}

fn exec_with_stdin(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Output {
    let mut child = binary()
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
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exec_prints_the_output_and_exits_with_the_programs_code() {
    let output = exec_with_stdin(
        &["--input", "world"],
        "import sys\nprint('hello', input())\nprint('oops', file=sys.stderr)\nsys.exit(7)",
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello world\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("oops\n"));
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn exec_runs_a_file() {
    let dir = std::env::temp_dir().join(format!("pyexec-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prog.py");
    std::fs::write(&file, "print(sum(range(10)))").unwrap();
    let output = binary().arg("exec").arg(&file).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "45\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn an_unreachable_daemon_says_so_and_what_to_do() {
    let output = exec_with_stdin(
        &[],
        "print(1)",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "cannot reach Docker at unix:///nonexistent/docker.sock — is the daemon running?"
        ),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn out_of_range_settings_are_refused_at_start() {
    let output = binary()
        .args(["exec", "--memory", "1m", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("16m to 64g"), "{stderr}");
    assert_ne!(output.status.code(), Some(0));
    let output = binary()
        .env("PYEXEC_TIMEOUT", "0")
        .arg("exec")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("timeout"));
    assert_ne!(output.status.code(), Some(0));
}

#[test]
fn help_lists_the_subcommands_and_the_environment_variables() {
    let output = binary().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "serve",
        "exec",
        "PYEXEC_TIMEOUT",
        "PYEXEC_MEMORY",
        "mcpServers",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}
