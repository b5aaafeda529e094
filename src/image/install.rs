//! One install: pip in a hardened container started from the parent image, committed as a new
//! labelled layer under the environment tag only when pip succeeds.
//!
//! The container runs as root (the venv is root-owned) with network, but keeps the execution
//! containers' hardening: no capabilities, no new privileges, memory, CPU and process limits.
//! pip's settings and CA bundle travel over stdin, so nothing secret is in the container's
//! config or the committed image.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::SystemTime;

use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::CommitContainerOptions;

use super::{
    InstallError, LABEL_BASE, LABEL_CREATED, LABEL_DEPTH, LABEL_PACKAGES, LABEL_PARENT,
    LABEL_REQUESTED, normalize_package_map, unix_now,
};
use crate::config::EnvironmentConfig;
use crate::packages::{PackageSpec, pip_install_args};
use crate::sandbox::{
    LABEL_DEADLINE, LABEL_OWNER, Sandbox, Stream, attached_body, hardened_host_config,
    ownership_labels, run_attached,
};

/// The program install containers run.
const DRIVER: &str = include_str!("driver.py");
/// The line prefix the driver prints before the installed-distributions JSON.
const MARKER: &str = "PYEXEC-INSTALLED ";
/// Lines of pip output kept for an error message.
const TAIL_LINES: usize = 25;
/// Largest file pip may write (wheels and their contents can be big).
const INSTALL_FSIZE: i64 = 4 << 30;

/// What one install builds.
pub struct Layer<'a> {
    /// Image the install container starts from.
    pub parent: &'a str,
    /// Id of the base image, recorded on the layer.
    pub base_id: &'a str,
    /// Specs given to pip.
    pub specs: &'a [PackageSpec],
    /// Every spec requested so far, recorded on the layer.
    pub requested: &'a [String],
    /// This layer's depth above the base.
    pub depth: u32,
}

/// A committed install layer.
pub struct Installed {
    /// The new image's id.
    pub image: String,
    /// Distributions in the parent image.
    pub before: BTreeMap<String, (String, String)>,
    /// Distributions in the new image.
    pub packages: BTreeMap<String, (String, String)>,
}

/// Runs pip for `layer` and commits the result.
pub async fn run(
    sandbox: &Sandbox,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    on_line: &(dyn Fn(&str) + Send + Sync),
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Installed, InstallError> {
    let payload = serde_json::to_vec(&serde_json::json!({
        "args": pip_install_args(layer.specs, config.allow_sdist),
        "env": config.pip_env.iter().cloned().collect::<HashMap<_, _>>(),
        "cert": config.pip_cert,
    }))
    .expect("a JSON object of strings serializes");
    let spec = install_spec(sandbox, config, layer.parent);
    sandbox
        .in_fresh_container(None, cancel, async |docker, name| {
            let mut lines = LineSplitter::default();
            let mut emit = |stream: Stream, bytes: &[u8]| {
                lines.push(stream, bytes, &mut |line| on_line(line));
            };
            let outcome = run_attached(
                docker,
                name,
                spec,
                &payload,
                config.install_timeout,
                &mut emit,
            )
            .await?;
            lines.finish(&mut |line| on_line(line));
            if outcome.timed_out {
                return Ok(Err(InstallError::TimedOut {
                    seconds: config.install_timeout.as_secs(),
                }));
            }
            if outcome.exit_code != 0 {
                let tail = lines.tail.iter().cloned().collect::<Vec<_>>().join("\n");
                return Ok(Err(InstallError::PipFailed {
                    exit_code: outcome.exit_code,
                    tail,
                }));
            }
            let Some(report) = lines.installed.take() else {
                return Ok(Err(InstallError::Commit(
                    "pip succeeded but did not report what it installed".to_string(),
                )));
            };
            let before = normalize_package_map(report.before);
            let packages = normalize_package_map(report.after);
            Ok(commit(docker, name, config, layer, &packages)
                .await
                .map(|image| Installed {
                    image,
                    before,
                    packages,
                }))
        })
        .await?
}

/// The install container: the shared hardening, but root, writable rootfs and a network.
fn install_spec(
    sandbox: &Sandbox,
    config: &EnvironmentConfig,
    parent: &str,
) -> ContainerCreateBody {
    let mut host_config = hardened_host_config(sandbox.config());
    host_config.network_mode = Some(config.install_network.clone());
    // Installs need the network; gVisor is registered with `--network=none` (see SECURITY.md),
    // so they run under the daemon's default runtime. Only pip runs here, never user code.
    host_config.runtime = None;
    host_config.readonly_rootfs = Some(false);
    if let Some(ulimits) = host_config.ulimits.as_mut() {
        for ulimit in ulimits
            .iter_mut()
            .filter(|u| u.name.as_deref() == Some("fsize"))
        {
            ulimit.soft = Some(INSTALL_FSIZE);
            ulimit.hard = Some(INSTALL_FSIZE);
        }
    }
    let deadline = SystemTime::now() + config.install_timeout + std::time::Duration::from_secs(60);
    let mut body = attached_body();
    // pip unpacks wheels in TMPDIR: on the rootfs, not the small tmpfs; pip cleans it up.
    if let Some(env) = body.env.as_mut() {
        env.push("TMPDIR=/var/tmp".to_string());
    }
    ContainerCreateBody {
        image: Some(parent.to_string()),
        user: Some("0:0".to_string()),
        cmd: Some(vec![
            "python3".to_string(),
            "-c".to_string(),
            DRIVER.to_string(),
        ]),
        labels: Some(ownership_labels(sandbox.instance(), deadline)),
        host_config: Some(host_config),
        ..body
    }
}

/// Commits the finished install container under the environment tag with the layer's labels.
async fn commit(
    docker: &bollard::Docker,
    name: &str,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    packages: &BTreeMap<String, (String, String)>,
) -> Result<String, InstallError> {
    let (repo, tag) = config.env_tag.rsplit_once(':').expect("validated repo:tag");
    let versions: BTreeMap<&str, &str> = packages
        .values()
        .map(|(name, version)| (name.as_str(), version.as_str()))
        .collect();
    let labels = HashMap::from([
        (
            LABEL_PACKAGES.to_string(),
            serde_json::to_string(&versions).unwrap_or_default(),
        ),
        (
            LABEL_REQUESTED.to_string(),
            serde_json::to_string(layer.requested).unwrap_or_default(),
        ),
        (LABEL_PARENT.to_string(), layer.parent.to_string()),
        (LABEL_BASE.to_string(), layer.base_id.to_string()),
        (LABEL_DEPTH.to_string(), layer.depth.to_string()),
        (LABEL_CREATED.to_string(), unix_now().to_string()),
        // Blank the install container's ownership labels so they are not inherited: the
        // reaper ignores containers whose owner label is empty.
        (LABEL_OWNER.to_string(), String::new()),
        (LABEL_DEADLINE.to_string(), String::new()),
    ]);
    let options = CommitContainerOptions {
        container: Some(name.to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        comment: Some(format!(
            "mcp-python-executor install: {}",
            layer
                .specs
                .iter()
                .map(|s| s.requirement.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        changes: Some("USER 10001:10001\nWORKDIR /tmp\nCMD [\"python3\"]".to_string()),
        pause: false,
        ..Default::default()
    };
    let config = ContainerConfig {
        labels: Some(labels),
        ..Default::default()
    };
    docker
        .commit_container(options, config)
        .await
        .map(|response| response.id)
        .map_err(|e| InstallError::Commit(e.to_string()))
}

/// Every installed distribution before and after pip ran, as the driver reports it.
#[derive(Debug, serde::Deserialize)]
struct DriverReport {
    before: BTreeMap<String, String>,
    after: BTreeMap<String, String>,
}

/// Splits both output streams into lines for progress, keeps the last few for errors, and
/// picks out the driver's final report.
#[derive(Default)]
struct LineSplitter {
    /// Unfinished line per stream.
    partial: [Vec<u8>; 2],
    /// The last lines seen, for an error message.
    tail: VecDeque<String>,
    /// The driver's report of installed distributions, once seen.
    installed: Option<DriverReport>,
}

impl LineSplitter {
    fn push(&mut self, stream: Stream, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        let index = usize::from(stream == Stream::Stderr);
        self.partial[index].extend_from_slice(bytes);
        while let Some(end) = self.partial[index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[index].drain(..=end).collect();
            self.line(&String::from_utf8_lossy(&line), emit);
        }
        // A line with no end in sight is cut, so memory stays bounded.
        if self.partial[index].len() > 64 << 10 {
            let line = std::mem::take(&mut self.partial[index]);
            self.line(&String::from_utf8_lossy(&line), emit);
        }
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        for index in 0..2 {
            let line = std::mem::take(&mut self.partial[index]);
            if !line.is_empty() {
                self.line(&String::from_utf8_lossy(&line), emit);
            }
        }
    }

    fn line(&mut self, line: &str, emit: &mut dyn FnMut(&str)) {
        let line = line.trim_end();
        if let Some(report) = line.strip_prefix(MARKER) {
            self.installed = serde_json::from_str(report).ok();
            return;
        }
        if line.is_empty() {
            return;
        }
        emit(line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_and_the_report_is_picked_out() {
        let mut splitter = LineSplitter::default();
        let mut seen = Vec::new();
        let mut emit = |line: &str| seen.push(line.to_string());
        splitter.push(Stream::Stdout, b"Collecting si", &mut emit);
        splitter.push(Stream::Stdout, b"x\nInstalling\n", &mut emit);
        splitter.push(Stream::Stderr, b"WARNING: x\n", &mut emit);
        let report = br#"PYEXEC-INSTALLED {"before": {}, "after": {"six": "1.16.0"}}"#;
        splitter.push(Stream::Stdout, b"\n", &mut emit);
        splitter.push(Stream::Stdout, report, &mut emit);
        splitter.push(Stream::Stdout, b"\n", &mut emit);
        splitter.finish(&mut emit);
        assert_eq!(seen, ["Collecting six", "Installing", "WARNING: x"]);
        let report = splitter.installed.unwrap();
        assert_eq!(report.after["six"], "1.16.0");
        assert!(report.before.is_empty());
    }

    #[test]
    fn the_tail_keeps_only_the_last_lines() {
        let mut splitter = LineSplitter::default();
        for i in 0..100 {
            splitter.push(
                Stream::Stderr,
                format!("line {i}\n").as_bytes(),
                &mut |_| {},
            );
        }
        assert_eq!(splitter.tail.len(), TAIL_LINES);
        assert_eq!(splitter.tail.back().unwrap(), "line 99");
    }
}
