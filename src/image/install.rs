//! One install: pip in a hardened container started from the parent image; the layer is
//! checked (paths, sizes) and committed under the environment tag only when pip succeeds.
//!
//! The container (`sandbox::install_spec`) runs pip as the installer user (never root) under
//! an interpreter that processes no `.pth` file, with the executions' hardening otherwise.
//! pip's settings and CA bundle travel over stdin, so nothing secret is in the container's
//! config or the committed image. This module runs the steps in order; each lives in its own
//! module: the output is read by `pip_output.rs`, the layer checked by `layer_check.rs`
//! (changes and sizes) and committed by `commit.rs` with the base's image config, so
//! executions see the same user, environment and command before and after any install.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::packages::pip_install_args;
use crate::sandbox::{InstallTarget, Sandbox, SandboxError, Stream, install_spec, run_attached};
use crate::settings::EnvironmentConfig;

use super::commit::commit;
use super::error::{InstallError, pip_failure};
use super::layer::Layer;
use super::layer_check::check_layer;
use super::pip_output::{DriverReport, LineSplitter};
use super::plan::normalize_package_map;

/// The program install containers run.
const DRIVER: &str = include_str!("driver.py");

/// A committed install layer.
pub struct Installed {
    /// The new image's id.
    pub image: String,
    /// Distributions in the parent image.
    pub before: BTreeMap<String, (String, String)>,
    /// Distributions in the new image.
    pub packages: BTreeMap<String, (String, String)>,
}

/// Runs pip for `layer`, checks the result and commits it.
pub async fn run(
    sandbox: &Sandbox,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    on_line: &(dyn Fn(&str) + Send + Sync),
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Installed, InstallError> {
    let payload = driver_input(layer, config);
    let target = InstallTarget {
        image: layer.parent,
        env_tag: &config.env_tag,
        network: &config.install_network,
        timeout: config.install_timeout,
        base_env: &layer.base.env,
        working_dir: &layer.base.working_dir,
        driver: DRIVER,
    };
    let spec = install_spec(
        sandbox.config(),
        &target,
        sandbox.instance(),
        SystemTime::now(),
    );
    sandbox
        .in_fresh_container(None, cancel, async |docker, guard| {
            let mut lines = LineSplitter::default();
            let mut emit = |stream: Stream, bytes: &[u8]| {
                lines.push(stream, bytes, &mut |line| on_line(line));
            };
            let outcome = run_attached(
                docker,
                guard,
                spec,
                &payload,
                config.install_timeout,
                &mut emit,
            )
            .await?;
            lines.finish(&mut |line| on_line(line));
            let report = match pip_report(outcome.timed_out, outcome.exit_code, &mut lines, config)
            {
                Ok(report) => report,
                Err(stopped) => return Ok(Err(stopped)),
            };
            check_and_commit(sandbox, docker, guard.name(), config, layer, report).await
        })
        .await?
}

/// What the driver reads on stdin: pip's arguments, its settings and its CA bundle.
fn driver_input(layer: &Layer<'_>, config: &EnvironmentConfig) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "args": pip_install_args(layer.specs, config.allow_sdist),
        "env": config.pip_env.iter().cloned().collect::<HashMap<_, _>>(),
        "cert": config.pip_cert,
    }))
    .expect("a JSON object of strings serializes")
}

/// How pip's run ended, before anything is checked: the driver's report when pip succeeded,
/// or why the install stops here.
fn pip_report(
    timed_out: bool,
    exit_code: i64,
    lines: &mut LineSplitter,
    config: &EnvironmentConfig,
) -> Result<DriverReport, InstallError> {
    if timed_out {
        return Err(InstallError::TimedOut {
            seconds: config.install_timeout.as_secs(),
        });
    }
    if exit_code != 0 {
        let tail: Vec<String> = lines.tail.iter().cloned().collect();
        return Err(pip_failure(exit_code, &tail, &lines.source_only));
    }
    lines.installed.take().ok_or_else(|| {
        InstallError::Commit("pip succeeded but did not report what it installed".to_string())
    })
}

/// Checks the finished container's layer and commits it. The outer error is the engine's
/// (the container is removed either way); the inner one is the install's refusal.
async fn check_and_commit(
    sandbox: &Sandbox,
    docker: &bollard::Docker,
    name: &str,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    report: DriverReport,
) -> Result<Result<Installed, InstallError>, SandboxError> {
    if let Err(refused) = check_layer(docker, name, config, layer.parent).await {
        return Ok(Err(refused));
    }
    let before = normalize_package_map(report.before);
    let packages = normalize_package_map(report.after);
    let podman = sandbox.engine().await?.kind == crate::engine::EngineKind::Podman;
    Ok(commit(docker, name, config, layer, &packages, podman)
        .await
        .map(|image| Installed {
            image,
            before,
            packages,
        }))
}
