//! The official MCP Inspector (npm `@modelcontextprotocol/inspector`, the version pinned in
//! tests/inspector/package-lock.json) drives the built binary in its CLI mode, as a user
//! debugging the server would: list the tools, run code, be refused an install, set the log
//! level (newer Inspectors send `logging/setLevel` right after connecting; an unanswered one
//! made them fail to connect at all).
//!
//! `make test` installs the Inspector (`npm ci` in tests/inspector) before the tests run.

use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");

fn inspector(args: &[&str]) -> Output {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/inspector/node_modules/.bin/mcp-inspector"
    );
    assert!(
        std::path::Path::new(path).exists(),
        "the MCP Inspector is not installed: run `npm ci --prefix tests/inspector` (make test does)"
    );
    // The server's log stays small: the Inspector never reads the server's stderr pipe.
    Command::new(path)
        .args([
            "--cli",
            "-e",
            "RUST_LOG=error",
            "-e",
            "PYEXEC_POOL_SIZE=0",
            BINARY,
        ])
        .args(args)
        .output()
        .expect("the Inspector runs (needs node)")
}

/// `tools/call` of `tool` with `key=value` arguments.
fn call(tool: &str, arguments: &[&str]) -> Output {
    let mut args = vec!["--method", "tools/call", "--tool-name", tool, "--tool-arg"];
    args.extend_from_slice(arguments);
    inspector(&args)
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "the Inspector failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the Inspector prints JSON")
}

#[test]
fn the_inspector_lists_the_tools() {
    let listed = json_of(&inspector(&["--method", "tools/list"]));
    let mut names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "close_session",
            "create_session",
            "execute_python",
            "install_packages",
            "list_packages"
        ]
    );
}

#[test]
fn the_inspector_runs_code_with_quotes_and_newlines() {
    let code = "import sys\nprint(\"hello 'world'\")\nprint(sys.version_info[0])";
    let called = json_of(&call("execute_python", &[&format!("code={code}")]));
    assert_eq!(called["isError"], false, "{called}");
    assert_eq!(called["content"][0]["text"], "stdout:\nhello 'world'\n3\n");
    assert_eq!(called["structuredContent"]["exit_code"], 0);
}

#[test]
fn the_inspector_passes_input_data() {
    let called = json_of(&call(
        "execute_python",
        &["code=print(input()[::-1])", "inputData=[\"abc\"]"],
    ));
    assert_eq!(called["content"][0]["text"], "stdout:\ncba\n", "{called}");
}

#[test]
fn the_inspector_sees_a_hostile_install_refused() {
    let output = call("install_packages", &["packages=[\"../evil\"]"]);
    assert!(!output.status.success(), "the refusal is a protocol error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("-32602"), "{stderr}");
    assert!(
        stderr.contains("URLs, VCS links and local paths are not accepted"),
        "{stderr}"
    );
}

#[test]
fn the_inspector_sets_the_log_level() {
    for level in ["debug", "error"] {
        let output = inspector(&["--method", "logging/setLevel", "--log-level", level]);
        json_of(&output);
    }
}
