//! Helpers shared by the integration tests: a sandbox with chosen settings, a one-line way to
//! run code, and a look at which containers a sandbox instance still has. Everything here talks
//! to the real Docker daemon and runs the real image built by `make image`.
#![allow(dead_code)]

use std::collections::HashMap;

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
pub fn sandbox_with(flags: &[&str]) -> Sandbox {
    let argv = std::iter::once("mcp-python-executor").chain(flags.iter().copied());
    let config = Flags::try_parse_from(argv).expect("valid test flags").args;
    Sandbox::new(config.resolve().expect("valid test config"))
}

/// A sandbox with the default limits.
pub fn sandbox() -> Sandbox {
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
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

/// Asserts that the sandbox left no container behind.
pub async fn assert_no_containers(sandbox: &Sandbox) {
    let left = containers_of(sandbox).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}
