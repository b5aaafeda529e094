//! One install: pip in a hardened container started from the parent image; the layer is
//! checked (paths, sizes) and committed under the environment tag only when pip succeeds.
//!
//! The container (`sandbox::install_spec`) runs pip as the installer user (never root) under
//! an interpreter that processes no `.pth` file, with the executions' hardening otherwise.
//! pip's settings and CA bundle travel over stdin, so nothing secret is in the container's
//! config or the committed image. Before the commit, Docker's list of filesystem changes must
//! pass `changes::check` and the layer must fit `--max-layer-size` and `--max-env-size`; the
//! commit then sets the image config back to the base's, so executions see the same user,
//! environment and command before and after any install.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::SystemTime;

use bollard::models::{ChangeType, ContainerConfig};
use bollard::query_parameters::{CommitContainerOptions, InspectContainerOptions};

use super::changes::{self, Change, ChangeKind};
use super::{InstallError, normalize_package_map, unix_now};
use crate::config::EnvironmentConfig;
use crate::docker::classify;
use crate::labels::{
    BASE_LAYOUT, LABEL_BASE, LABEL_CREATED, LABEL_DEADLINE, LABEL_DEPTH, LABEL_ENV, LABEL_INSTALL,
    LABEL_LAYOUT, LABEL_OWNER, LABEL_PACKAGES, LABEL_PARENT, LABEL_REQUESTED,
};
use crate::packages::{PackageSpec, pip_install_args};
use crate::sandbox::{InstallTarget, Sandbox, SandboxError, Stream, install_spec, run_attached};

/// The program install containers run.
const DRIVER: &str = include_str!("driver.py");
/// The line prefix the driver prints before the installed-distributions JSON.
const MARKER: &str = "PYEXEC-INSTALLED ";
/// The line prefix the driver prints before a name the index has only as source.
const SOURCE_ONLY: &str = "PYEXEC-SOURCE-ONLY ";
/// Lines of pip output kept for an error message.
const TAIL_LINES: usize = 25;

/// What one install builds.
pub struct Layer<'a> {
    /// Image the install container starts from.
    pub parent: &'a str,
    /// The base image at the bottom of the chain, whose config every layer keeps.
    pub base: &'a BaseImage,
    /// Specs given to pip.
    pub specs: &'a [PackageSpec],
    /// Every spec requested so far, recorded on the layer.
    pub requested: &'a [String],
    /// This layer's depth above the base.
    pub depth: u32,
}

/// The base image's id and the config every committed layer is set back to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseImage {
    pub id: String,
    pub user: String,
    pub env: Vec<String>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
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

/// Reads the base image's config, and refuses a base built before installs ran unprivileged.
pub async fn base_image(docker: &bollard::Docker, image: &str) -> Result<BaseImage, InstallError> {
    let inspected = docker
        .inspect_image(image)
        .await
        .map_err(|e| SandboxError::from(classify(e, "inspect the base image", image)))?;
    let config = inspected.config.unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    if labels.get(LABEL_LAYOUT).map(String::as_str) != Some(BASE_LAYOUT) {
        return Err(InstallError::BaseOutdated {
            image: image.to_string(),
        });
    }
    Ok(BaseImage {
        id: inspected.id.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        working_dir: config
            .working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        entrypoint: config.entrypoint,
        cmd: config.cmd,
    })
}

/// Runs pip for `layer`, checks the result and commits it.
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
            let name = guard.name();
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
            if outcome.timed_out {
                return Ok(Err(InstallError::TimedOut {
                    seconds: config.install_timeout.as_secs(),
                }));
            }
            if outcome.exit_code != 0 {
                let tail: Vec<String> = lines.tail.iter().cloned().collect();
                return Ok(Err(pip_failure(
                    outcome.exit_code,
                    &tail,
                    &lines.source_only,
                )));
            }
            let Some(report) = lines.installed.take() else {
                return Ok(Err(InstallError::Commit(
                    "pip succeeded but did not report what it installed".to_string(),
                )));
            };
            if let Err(refused) = check_layer(docker, name, config, layer.parent).await {
                return Ok(Err(refused));
            }
            let before = normalize_package_map(report.before);
            let packages = normalize_package_map(report.after);
            let podman = sandbox.engine().await?.kind == crate::docker::EngineKind::Podman;
            Ok(commit(docker, name, config, layer, &packages, podman)
                .await
                .map(|image| Installed {
                    image,
                    before,
                    packages,
                }))
        })
        .await?
}

/// The error for a pip that exited non-zero. A requested name counts as source-only when pip
/// found no version of it at all (sdists refused) and the driver found that the index has
/// versions of it in some format: then the answer says so and how to allow source builds.
fn pip_failure(exit_code: i64, tail: &[String], source_only: &[String]) -> InstallError {
    let none = no_version_found(tail);
    let source_only: Vec<&str> = source_only
        .iter()
        .filter(|name| none.contains(&super::normalize_name(name)))
        .map(String::as_str)
        .collect();
    let tail = tail.join("\n");
    if source_only.is_empty() {
        InstallError::PipFailed { exit_code, tail }
    } else {
        InstallError::NoWheel {
            specs: source_only.join(", "),
            tail,
        }
    }
}

/// The normalized names pip found no version of at all (`… (from versions: none)`).
fn no_version_found(tail: &[String]) -> Vec<String> {
    const START: &str = "Could not find a version that satisfies the requirement ";
    tail.iter()
        .filter_map(|line| {
            let rest = &line[line.find(START)? + START.len()..];
            let (requirement, after) = rest.split_once(' ')?;
            let name_end = requirement
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                .unwrap_or(requirement.len());
            after
                .contains("(from versions: none)")
                .then(|| super::normalize_name(&requirement[..name_end]))
        })
        .collect()
}

/// Refuses a layer that changes anything but `/opt/venv` (or what must stay there), or that
/// is over the size limits. Nothing is committed when this fails.
async fn check_layer(
    docker: &bollard::Docker,
    name: &str,
    config: &EnvironmentConfig,
    parent: &str,
) -> Result<(), InstallError> {
    let listed = docker
        .container_changes(name)
        .await
        .map_err(|e| InstallError::Commit(format!("could not list the layer's changes: {e}")))?
        .unwrap_or_default();
    let listed: Vec<Change> = listed
        .into_iter()
        .map(|c| Change {
            path: c.path,
            kind: match c.kind {
                ChangeType::_0 => ChangeKind::Modified,
                ChangeType::_1 => ChangeKind::Added,
                ChangeType::_2 => ChangeKind::Deleted,
            },
        })
        .collect();
    changes::check(&listed).map_err(|refusal| InstallError::Refused {
        path: refusal.path,
        why: refusal.why,
    })?;
    let layer = docker
        .inspect_container(name, Some(InspectContainerOptions { size: true }))
        .await
        .map_err(|e| InstallError::Commit(format!("could not measure the layer: {e}")))?
        .size_rw
        .unwrap_or(0)
        .max(0) as u64;
    let below = docker
        .inspect_image(parent)
        .await
        .map_err(|e| InstallError::Commit(format!("could not measure the environment: {e}")))?
        .size
        .unwrap_or(0)
        .max(0) as u64;
    check_sizes(layer, below, config)
}

/// The size limits, as a pure decision: the new layer alone, and the environment with it.
fn check_sizes(layer: u64, below: u64, config: &EnvironmentConfig) -> Result<(), InstallError> {
    if layer > config.max_layer_bytes {
        return Err(InstallError::TooLarge {
            what: "layer",
            size: layer,
            limit: config.max_layer_bytes,
            flag: "--max-layer-size (PYEXEC_MAX_LAYER_SIZE)",
        });
    }
    if below + layer > config.max_env_bytes {
        return Err(InstallError::TooLarge {
            what: "environment",
            size: below + layer,
            limit: config.max_env_bytes,
            flag: "--max-env-size (PYEXEC_MAX_ENV_SIZE)",
        });
    }
    Ok(())
}

/// The image config of a committed layer: the base's user, environment, entrypoint, command
/// and working directory, set explicitly (a commit would otherwise keep the install
/// container's), plus the layer's labels.
fn layer_config(base: &BaseImage, labels: HashMap<String, String>) -> ContainerConfig {
    ContainerConfig {
        user: Some(base.user.clone()),
        env: Some(base.env.clone()),
        // An empty list, not none: Docker fills a missing entrypoint from the container's.
        entrypoint: Some(base.entrypoint.clone().unwrap_or_default()),
        cmd: base.cmd.clone(),
        working_dir: Some(base.working_dir.clone()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// Commits the finished install container under the environment tag with the layer's labels.
///
/// Docker takes the layer's config from the request body. Podman 4.3's compatible commit
/// ignores the body and keeps the install container's config, but applies Dockerfile-style
/// `changes`: there the config is sent as changes, the image is committed untagged, its config
/// is checked against the layer's, and only then is the tag moved.
async fn commit(
    docker: &bollard::Docker,
    name: &str,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    packages: &BTreeMap<String, (String, String)>,
    podman: bool,
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
        (LABEL_BASE.to_string(), layer.base.id.clone()),
        (LABEL_DEPTH.to_string(), layer.depth.to_string()),
        (LABEL_CREATED.to_string(), unix_now().to_string()),
        (LABEL_ENV.to_string(), config.env_tag.clone()),
        // Blank the install container's own labels so they are not inherited: the reaper
        // ignores containers whose owner label is empty.
        (LABEL_OWNER.to_string(), String::new()),
        (LABEL_DEADLINE.to_string(), String::new()),
        (LABEL_INSTALL.to_string(), String::new()),
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
        pause: false,
        ..Default::default()
    };
    let wanted = layer_config(layer.base, labels);
    if !podman {
        return docker
            .commit_container(options, wanted)
            .await
            .map(|response| response.id)
            .map_err(|e| InstallError::Commit(e.to_string()));
    }
    let options = CommitContainerOptions {
        repo: None,
        tag: None,
        changes: Some(as_changes(&wanted).map_err(InstallError::Commit)?),
        ..options
    };
    let id = docker
        .commit_container(options, wanted.clone())
        .await
        .map_err(|e| InstallError::Commit(e.to_string()))?
        .id;
    // An image that will not become the environment is removed, whatever stopped it.
    let discard = async |id: &str| {
        let remove = bollard::query_parameters::RemoveImageOptions {
            force: true,
            ..Default::default()
        };
        let _ = docker.remove_image(id, Some(remove), None).await;
    };
    let made = match docker.inspect_image(&id).await {
        Ok(made) => made,
        Err(error) => {
            discard(&id).await;
            return Err(InstallError::Commit(error.to_string()));
        }
    };
    let mismatch = made
        .config
        .as_ref()
        .map_or(Some("no config".to_string()), |got| {
            config_mismatch(&wanted, got)
        });
    if let Some(mismatch) = mismatch {
        discard(&id).await;
        return Err(InstallError::Commit(format!(
            "the engine's commit did not give the layer the base's config ({mismatch}); \
             nothing was installed"
        )));
    }
    // Podman answers the bare hex; the id is said as Docker and inspect say it.
    let id = made
        .id
        .unwrap_or_else(|| format!("sha256:{}", id.trim_start_matches("sha256:")));
    let tag = bollard::query_parameters::TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    if let Err(error) = docker.tag_image(&id, Some(tag)).await {
        discard(&id).await;
        return Err(InstallError::Commit(error.to_string()));
    }
    Ok(id)
}

/// A layer's config as Dockerfile instructions for a commit's `changes`, one per line (no
/// blank line: Podman refuses it). Values are written raw, as Podman reads them; a value
/// holding a newline cannot be said this way and is refused.
fn as_changes(config: &ContainerConfig) -> Result<String, String> {
    let json = |items: &Option<Vec<String>>| {
        serde_json::to_string(items.as_deref().unwrap_or_default()).expect("strings serialize")
    };
    let mut lines = vec![
        format!("USER {}", config.user.as_deref().unwrap_or_default()),
        format!("ENTRYPOINT {}", json(&config.entrypoint)),
        format!("CMD {}", json(&config.cmd)),
        format!("WORKDIR {}", config.working_dir.as_deref().unwrap_or("/")),
    ];
    lines.extend(
        config
            .env
            .iter()
            .flatten()
            .map(|pair| format!("ENV {pair}")),
    );
    let labels: BTreeMap<_, _> = config.labels.iter().flatten().collect();
    lines.extend(
        labels
            .into_iter()
            .map(|(key, value)| format!("LABEL {key}={value}")),
    );
    match lines.iter().find(|line| line.contains('\n')) {
        Some(line) => Err(format!("a layer's config holds a newline: {line:?}")),
        None => Ok(lines.join("\n")),
    }
}

/// Engines add these to every container's environment (Podman: `container`, `TERM`,
/// `HOSTNAME`); a commit keeps them. The runner removes the first two before code runs;
/// `HOSTNAME` is the container's hostname, which executions on that engine see anyway.
const ENGINE_ENV: [&str; 3] = ["container", "TERM", "HOSTNAME"];

/// How a committed image's config differs from the layer's, if it does: user, entrypoint,
/// command, working directory and environment must be the layer's (plus only what the engine
/// adds to every container), and every label of the layer must be there with its value.
fn config_mismatch(wanted: &ContainerConfig, got: &bollard::models::ImageConfig) -> Option<String> {
    let list = |items: &Option<Vec<String>>| items.clone().unwrap_or_default();
    if got.user != wanted.user {
        return Some(format!("user {:?}", got.user));
    }
    if list(&got.entrypoint) != list(&wanted.entrypoint) {
        return Some(format!("entrypoint {:?}", got.entrypoint));
    }
    if list(&got.cmd) != list(&wanted.cmd) {
        return Some(format!("command {:?}", got.cmd));
    }
    if got.working_dir != wanted.working_dir {
        return Some(format!("working directory {:?}", got.working_dir));
    }
    let mut want_env = list(&wanted.env);
    want_env.sort();
    let mut got_env: Vec<String> = list(&got.env)
        .into_iter()
        .filter(|pair| {
            !ENGINE_ENV
                .iter()
                .any(|name| pair.split('=').next() == Some(*name))
        })
        .collect();
    got_env.sort();
    if got_env != want_env {
        return Some(format!("environment {got_env:?}"));
    }
    let got_labels = got.labels.clone().unwrap_or_default();
    for (key, value) in wanted.labels.iter().flatten() {
        if got_labels.get(key) != Some(value) {
            return Some(format!("label {key} = {:?}", got_labels.get(key)));
        }
    }
    None
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
    /// Requested names the index has only as source distributions (driver's report).
    source_only: Vec<String>,
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
        if let Some(name) = line.strip_prefix(SOURCE_ONLY) {
            if self.source_only.len() < 20 {
                self.source_only.push(name.to_string());
            }
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

    fn sizes_config() -> EnvironmentConfig {
        let mut config = crate::config::EnvironmentArgs::default().resolve().unwrap();
        config.max_layer_bytes = 100;
        config.max_env_bytes = 1000;
        config
    }

    #[test]
    fn a_layer_over_either_size_limit_is_refused_naming_the_flag() {
        let config = sizes_config();
        assert!(check_sizes(100, 900, &config).is_ok());
        let layer = check_sizes(101, 0, &config).unwrap_err().to_string();
        assert!(layer.contains("--max-layer-size"), "{layer}");
        assert!(layer.contains("packages reset"), "{layer}");
        let env = check_sizes(50, 951, &config).unwrap_err().to_string();
        assert!(env.contains("--max-env-size"), "{env}");
    }

    #[test]
    fn a_committed_layer_gets_the_bases_config_back() {
        let base = BaseImage {
            id: "sha256:base".into(),
            user: "10001:10001".into(),
            env: vec!["PATH=/opt/venv/bin:/usr/bin".into()],
            working_dir: "/tmp".into(),
            entrypoint: None,
            cmd: Some(vec!["python3".into()]),
        };
        let config = layer_config(&base, HashMap::new());
        assert_eq!(config.user.as_deref(), Some("10001:10001"));
        assert_eq!(config.env, Some(base.env.clone()));
        assert_eq!(config.entrypoint, Some(vec![]));
        assert_eq!(config.cmd, base.cmd);
        assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    }

    fn podman_base() -> BaseImage {
        BaseImage {
            id: "sha256:base".into(),
            user: "10001:10001".into(),
            env: vec!["PATH=/opt/venv/bin:/usr/bin".into(), "LANG=C.UTF-8".into()],
            working_dir: "/tmp".into(),
            entrypoint: None,
            cmd: Some(vec!["python3".into()]),
        }
    }

    #[test]
    fn a_layers_config_is_said_as_changes_one_line_each_with_json_label_values_raw() {
        let labels = HashMap::from([
            (
                LABEL_PACKAGES.to_string(),
                r#"{"numpy":"1.26.4"}"#.to_string(),
            ),
            (LABEL_OWNER.to_string(), String::new()),
        ]);
        let changes = as_changes(&layer_config(&podman_base(), labels)).unwrap();
        let lines: Vec<&str> = changes.lines().collect();
        assert_eq!(
            lines,
            [
                "USER 10001:10001",
                "ENTRYPOINT []",
                r#"CMD ["python3"]"#,
                "WORKDIR /tmp",
                "ENV PATH=/opt/venv/bin:/usr/bin",
                "ENV LANG=C.UTF-8",
                "LABEL mcp-python-executor=",
                r#"LABEL mcp-python-executor.packages={"numpy":"1.26.4"}"#,
            ]
        );
        assert!(!changes.ends_with('\n') && !changes.contains("\n\n"));
    }

    /// A value that would add an instruction of its own (a newline, then `USER root`) is
    /// refused, not split.
    #[test]
    fn a_config_value_holding_a_newline_is_refused_not_split_into_instructions() {
        let mut base = podman_base();
        base.env.push("EVIL=x\nUSER root".into());
        let refused = as_changes(&layer_config(&base, HashMap::new())).unwrap_err();
        assert!(refused.contains("newline"), "{refused}");
    }

    #[test]
    fn a_committed_config_must_match_bar_the_engines_own_variables() {
        let labels = HashMap::from([(LABEL_DEPTH.to_string(), "1".to_string())]);
        let wanted = layer_config(&podman_base(), labels.clone());
        let good = bollard::models::ImageConfig {
            user: Some("10001:10001".into()),
            env: Some(vec![
                "TERM=xterm".into(),
                "LANG=C.UTF-8".into(),
                "container=podman".into(),
                "HOSTNAME=sandbox".into(),
                "PATH=/opt/venv/bin:/usr/bin".into(),
            ]),
            entrypoint: None,
            cmd: Some(vec!["python3".into()]),
            working_dir: Some("/tmp".into()),
            labels: Some(HashMap::from([
                (LABEL_DEPTH.to_string(), "1".to_string()),
                ("inherited".to_string(), "x".to_string()),
            ])),
            ..Default::default()
        };
        assert_eq!(config_mismatch(&wanted, &good), None);
        let installer = bollard::models::ImageConfig {
            user: Some("10002:10002".into()),
            ..good.clone()
        };
        assert!(
            config_mismatch(&wanted, &installer)
                .unwrap()
                .contains("user")
        );
        let mut extra = good.clone();
        extra
            .env
            .as_mut()
            .unwrap()
            .push("PIP_INDEX_URL=http://secret@x".into());
        assert!(
            config_mismatch(&wanted, &extra)
                .unwrap()
                .contains("environment")
        );
        let entry = bollard::models::ImageConfig {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..good.clone()
        };
        assert!(
            config_mismatch(&wanted, &entry)
                .unwrap()
                .contains("entrypoint")
        );
        let unlabelled = bollard::models::ImageConfig {
            labels: None,
            ..good
        };
        assert!(
            config_mismatch(&wanted, &unlabelled)
                .unwrap()
                .contains("label")
        );
    }

    #[test]
    fn a_source_only_package_is_named_with_the_flag_that_allows_it() {
        let tail = [
            "ERROR: Could not find a version that satisfies the requirement docopt (from versions: none)".to_string(),
        ];
        let error = pip_failure(1, &tail, &["docopt".to_string()]).to_string();
        assert!(error.contains("docopt"), "{error}");
        assert!(error.contains("only as source"), "{error}");
        assert!(error.contains("--allow-sdist"), "{error}");
        assert!(error.contains("PYEXEC_ALLOW_SDIST"), "{error}");
        // No source-only finding: a plain failure (no such package, or no fitting version).
        assert!(matches!(
            pip_failure(1, &tail, &[]),
            InstallError::PipFailed { .. }
        ));
        // The index has versions, but pip failed for another reason (a broken wheel).
        let broken = ["ERROR: For req: docopt. Unknown scheme key used".to_string()];
        assert!(matches!(
            pip_failure(1, &broken, &["docopt".to_string()]),
            InstallError::PipFailed { .. }
        ));
        let pinned = ["ERROR: Could not find a version that satisfies the requirement Doc_Opt==0.6 (from versions: none)".to_string()];
        assert!(matches!(
            pip_failure(1, &pinned, &["doc-opt".to_string()]),
            InstallError::NoWheel { .. }
        ));
    }

    #[test]
    fn source_only_reports_are_picked_out_of_the_output() {
        let mut splitter = LineSplitter::default();
        let mut seen = Vec::new();
        splitter.push(
            Stream::Stdout,
            b"ERROR: nope\n\nPYEXEC-SOURCE-ONLY docopt\n",
            &mut |l| seen.push(l.to_string()),
        );
        assert_eq!(splitter.source_only, ["docopt"]);
        assert_eq!(seen, ["ERROR: nope"]);
    }

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
