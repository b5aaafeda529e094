//! Committing a checked install container as the environment's new layer, under the
//! environment tag, with the layer's labels and the base image's config (user, environment,
//! entrypoint, command, working directory), so executions see the same image config before
//! and after any install.
//!
//! Docker takes the config from the commit's body. Podman 4.3 ignores the body but applies
//! Dockerfile-style `changes`: there the config is said as changes, the image is committed
//! untagged and read back, and only an image whose config is the layer's gets the tag.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::ContainerConfig;
use bollard::query_parameters::{CommitContainerOptions, RemoveImageOptions, TagImageOptions};

use crate::labels::{
    LABEL_BASE, LABEL_CREATED, LABEL_DEADLINE, LABEL_DEPTH, LABEL_ENV, LABEL_INSTALL, LABEL_OWNER,
    LABEL_PACKAGES, LABEL_PARENT, LABEL_REQUESTED,
};
use crate::settings::EnvironmentConfig;

use super::error::InstallError;
use super::layer::{BaseImage, Layer};

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
pub async fn commit(
    docker: &bollard::Docker,
    name: &str,
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    packages: &BTreeMap<String, (String, String)>,
    podman: bool,
) -> Result<String, InstallError> {
    let (repo, tag) = config.env_tag.rsplit_once(':').expect("validated repo:tag");
    let labels = layer_labels(config, layer, packages);
    let options = CommitContainerOptions {
        container: Some(name.to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        comment: Some(comment(layer)),
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
    commit_then_tag(docker, options, &wanted, repo, tag).await
}

/// The labels a committed layer carries: what is installed and was asked for, its place in
/// the chain, and blanks over the install container's own labels.
fn layer_labels(
    config: &EnvironmentConfig,
    layer: &Layer<'_>,
    packages: &BTreeMap<String, (String, String)>,
) -> HashMap<String, String> {
    let versions: BTreeMap<&str, &str> = packages
        .values()
        .map(|(name, version)| (name.as_str(), version.as_str()))
        .collect();
    HashMap::from([
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
    ])
}

/// The commit's comment: the specs pip was given.
fn comment(layer: &Layer<'_>) -> String {
    format!(
        "mcp-python-executor install: {}",
        layer
            .specs
            .iter()
            .map(|s| s.requirement.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Podman's commit: untagged, with the config as `changes`; the image is read back and
/// tagged only when its config is the layer's. An image that will not become the environment
/// is removed, whatever stopped it.
async fn commit_then_tag(
    docker: &bollard::Docker,
    options: CommitContainerOptions,
    wanted: &ContainerConfig,
    repo: &str,
    tag: &str,
) -> Result<String, InstallError> {
    let options = CommitContainerOptions {
        repo: None,
        tag: None,
        changes: Some(as_changes(wanted).map_err(InstallError::Commit)?),
        ..options
    };
    let id = docker
        .commit_container(options, wanted.clone())
        .await
        .map_err(|e| InstallError::Commit(e.to_string()))?
        .id;
    let id = match read_back(docker, &id, wanted).await {
        Ok(id) => id,
        Err(error) => {
            discard(docker, &id).await;
            return Err(error);
        }
    };
    let tag = TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    if let Err(error) = docker.tag_image(&id, Some(tag)).await {
        discard(docker, &id).await;
        return Err(InstallError::Commit(error.to_string()));
    }
    Ok(id)
}

/// Reads an untagged commit back: its config must be the layer's. Returns its id as Docker
/// and inspect say it (Podman answers the bare hex).
async fn read_back(
    docker: &bollard::Docker,
    id: &str,
    wanted: &ContainerConfig,
) -> Result<String, InstallError> {
    let made = docker
        .inspect_image(id)
        .await
        .map_err(|error| InstallError::Commit(error.to_string()))?;
    let mismatch = made
        .config
        .as_ref()
        .map_or(Some("no config".to_string()), |got| {
            config_mismatch(wanted, got)
        });
    if let Some(mismatch) = mismatch {
        return Err(InstallError::Commit(format!(
            "the engine's commit did not give the layer the base's config ({mismatch}); \
             nothing was installed"
        )));
    }
    Ok(made
        .id
        .unwrap_or_else(|| format!("sha256:{}", id.trim_start_matches("sha256:"))))
}

/// Removes a committed image that will not become the environment.
async fn discard(docker: &bollard::Docker, id: &str) {
    let remove = RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_image(id, Some(remove), None).await;
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
