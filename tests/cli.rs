//! The binary from a terminal: `exec` mirrors the program, `--help` explains, bad settings
//! and an unreachable daemon produce errors that say what to do.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::exec_with_stdin;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
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
    // The tool failed, not the program: 125, as `docker run` says it.
    assert_eq!(output.status.code(), Some(125));
    // Said once, the hint on a line of its own.
    assert_eq!(stderr.matches("cannot reach Docker").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent/docker.sock").count(),
        2,
        "the address once, and the reason once: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[1].starts_with("hint: ") && lines[1].contains("DOCKER_HOST"),
        "{stderr}"
    );
}

/// An `ssh://` host that is no URL the Docker CLI would take is refused with the form it takes,
/// by `exec` and `doctor` alike, before any ssh runs (tests/ssh.rs runs code over a real sshd).
#[test]
fn a_malformed_ssh_docker_host_is_refused_with_the_form_to_use() {
    let host = ("DOCKER_HOST", "ssh://root@127.0.0.1:2222/some/path");
    let output = exec_with_stdin(&[], "print(1)", &[host]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("is not an ssh:// URL this server can use"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: write it as the Docker CLI does: ssh://[USER@]HOST[:PORT]"),
        "{stderr}"
    );
    let doctor = binary().arg("doctor").env(host.0, host.1).output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success());
    assert!(
        report.contains("next: write it as the Docker CLI does"),
        "{report}"
    );
}

/// `image build --help` names every setting of its own with its variable.
#[test]
fn image_build_help_names_its_settings_and_variables() {
    let output = binary()
        .args(["image", "build", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--offline",
        "PYEXEC_OFFLINE",
        "--rootfs",
        "PYEXEC_ROOTFS",
        "DEBIAN_MIRROR",
        "DEBIAN_SUITE",
        "DEBOOTSTRAP_CACHE",
        "PYEXEC_BASE_IMAGE",
        "PYEXEC_IMAGE_FORCE",
    ] {
        assert!(
            help.contains(expected),
            "image build --help lacks {expected}:\n{help}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_is_a_quiet_exit_with_the_programs_status() {
    let mut child = binary()
        .args(["exec", "--pool-size", "0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"import sys\nprint('x' * 4_000_000)\nsys.exit(4)")
        .unwrap();
    drop(child.stdout.take()); // like `| head -c 0`
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("error"), "{stderr}");
    assert_eq!(output.status.code(), Some(4));
}

#[test]
fn doctor_checks_a_running_daemon_and_says_what_to_do_without_one() {
    let output = binary().arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    for check in [
        "docker",
        "runtime",
        "seccomp",
        "cgroup",
        "image",
        "environment",
        "leftovers",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(check)),
            "{check} missing:\n{report}"
        );
    }
    assert!(report.contains("API 1."), "{report}");
    assert_eq!(output.status.code(), Some(0), "{report}");

    let output = binary()
        .arg("doctor")
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.starts_with("FAIL  docker"), "{report}");
    assert!(
        report.contains("next: ") && report.contains("DOCKER_HOST"),
        "{report}"
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
