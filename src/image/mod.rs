//! The package environment: which image executions start from, and how `install_packages`
//! bakes packages into it as Docker image layers.
//!
//! The current environment is an image tagged `--env-tag` whose labels record everything
//! about it (installed distributions, requested specs, parent, base, depth), so a restart
//! knows what is installed from one `inspect` — no container, no install. An install runs pip
//! in a hardened container started from the current image, commits the result as a new
//! layer, and only then moves the tag and points later executions at it. Installs are
//! serialized by one lock; executions never take it.

mod install;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::RemoveImageOptions;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::EnvironmentConfig;
use crate::packages::{PackageSpec, SpecError, parse_specs};
use crate::sandbox::{Sandbox, SandboxError};

/// Label: JSON object of every installed distribution, `{name: version}`.
pub const LABEL_PACKAGES: &str = "mcp-python-executor.packages";
/// Label: JSON array of the specs users asked for, in order (used to rebuild in one layer).
pub const LABEL_REQUESTED: &str = "mcp-python-executor.requested";
/// Label: id of the image this layer was installed on.
pub const LABEL_PARENT: &str = "mcp-python-executor.parent";
/// Label: id of the base image at the bottom of the chain.
pub const LABEL_BASE: &str = "mcp-python-executor.base";
/// Label: number of install layers above the base.
pub const LABEL_DEPTH: &str = "mcp-python-executor.depth";
/// Label: Unix time the layer was made.
pub const LABEL_CREATED: &str = "mcp-python-executor.created";

/// What is installed in the current environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvState {
    /// The image executions use: the environment image's id, or the base image.
    pub image: String,
    /// Id of the base image the environment was built on.
    pub base_id: String,
    /// Installed distributions by normalized name: (display name, version).
    pub packages: BTreeMap<String, (String, String)>,
    /// Specs users asked for, in the order they were first installed.
    pub requested: Vec<String>,
    /// Install layers above the base.
    pub depth: u32,
}

/// The answer to an install.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct InstallReport {
    /// Distributions added or changed, as `name==version` (dependencies included).
    pub installed: Vec<String>,
    /// Requested specs that were already satisfied, as `name==version`.
    pub already_present: Vec<String>,
    /// Wall-clock time of the whole install, in milliseconds.
    pub duration_ms: u64,
    /// True when the layer chain was at its limit and the environment was rebuilt in one layer.
    pub rebuilt: bool,
}

/// Why an install did not happen. The environment is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
    #[error(
        "pip failed (exit code {exit_code}); the environment is unchanged. pip's last lines:\n{tail}"
    )]
    PipFailed { exit_code: i64, tail: String },
    #[error(
        "the install took longer than {seconds} s and was stopped; the environment is unchanged \
         (raise --install-timeout / PYEXEC_INSTALL_TIMEOUT)"
    )]
    TimedOut { seconds: u64 },
    #[error("the install finished but its result could not be saved: {0}")]
    Commit(String),
}

/// The current package environment and the lock that serializes changes to it.
pub struct Environment {
    /// Runs the install containers and is told which image executions use.
    sandbox: Arc<Sandbox>,
    /// Install settings.
    config: EnvironmentConfig,
    /// The loaded state; `None` until the first successful load. Held only briefly, so
    /// executions reading it never wait for an install.
    state: Mutex<Option<EnvState>>,
    /// Held for a whole install or reset: changes to the environment happen one at a time.
    changing: Mutex<()>,
}

impl Environment {
    pub fn new(sandbox: Arc<Sandbox>, config: EnvironmentConfig) -> Self {
        Self {
            sandbox,
            config,
            state: Mutex::new(None),
            changing: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &EnvironmentConfig {
        &self.config
    }

    /// Loads the environment from its tag (once) and points executions at it.
    pub async fn ensure_loaded(&self) -> Result<EnvState, SandboxError> {
        let mut state = self.state.lock().await;
        if let Some(loaded) = state.as_ref() {
            return Ok(loaded.clone());
        }
        let loaded = self.load().await?;
        self.sandbox.set_current_image(&loaded.image);
        *state = Some(loaded.clone());
        Ok(loaded)
    }

    /// Makes `next` the current environment for later calls.
    async fn replace_state(&self, next: EnvState) {
        self.sandbox.set_current_image(&next.image);
        *self.state.lock().await = Some(next);
    }

    /// Reads the environment image's labels; an absent tag, or one built on another base,
    /// means the base image with nothing installed.
    async fn load(&self) -> Result<EnvState, SandboxError> {
        let docker = self.sandbox.docker().await?;
        let base = &self.sandbox.config().image;
        let base_id = docker
            .inspect_image(base)
            .await
            .map_err(|e| crate::docker::classify(e, "inspect the base image", base))?
            .id
            .unwrap_or_default();
        let fresh = EnvState {
            image: base.clone(),
            base_id: base_id.clone(),
            ..EnvState::default()
        };
        let Ok(env) = docker.inspect_image(&self.config.env_tag).await else {
            return Ok(fresh);
        };
        let labels = env.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(LABEL_BASE) != Some(&base_id) {
            tracing::warn!(
                tag = %self.config.env_tag,
                "the package environment was built on another base image; starting from the base"
            );
            return Ok(fresh);
        }
        Ok(EnvState {
            image: env.id.unwrap_or_else(|| self.config.env_tag.clone()),
            base_id,
            packages: parse_packages_label(&labels),
            requested: labels
                .get(LABEL_REQUESTED)
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default(),
            depth: labels
                .get(LABEL_DEPTH)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Installs what `specs` asks for that is not already satisfied, as one new layer.
    ///
    /// `on_line` receives pip's output line by line (for progress). Nothing changes unless
    /// pip succeeds and the layer is committed.
    pub async fn install<S: AsRef<str>>(
        &self,
        specs: &[S],
        on_line: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<InstallReport, InstallError> {
        let specs = parse_specs(specs)?;
        let started = Instant::now();
        let _changing = self.changing.lock().await;
        let state = self.ensure_loaded().await?;
        let (present, missing): (Vec<&PackageSpec>, Vec<&PackageSpec>) =
            specs.iter().partition(|spec| {
                state
                    .packages
                    .get(&spec.name)
                    .is_some_and(|(_, version)| spec.is_satisfied_by(version))
            });
        let already_present = present
            .iter()
            .map(|s| {
                let (name, version) = &state.packages[&s.name];
                format!("{name}=={version}")
            })
            .collect();
        if missing.is_empty() {
            return Ok(InstallReport {
                installed: Vec::new(),
                already_present,
                duration_ms: started.elapsed().as_millis() as u64,
                rebuilt: false,
            });
        }
        let mut requested = state.requested.clone();
        for spec in &missing {
            requested.retain(|r| {
                crate::packages::parse_spec(r).map(|p| p.name) != Ok(spec.name.clone())
            });
            requested.push(spec.requirement.clone());
        }
        let rebuild = state.depth >= self.config.max_layers;
        let (parent, to_install, depth) = if rebuild {
            (state.base_id.clone(), parse_specs(&requested)?, 1)
        } else {
            let missing = missing.into_iter().cloned().collect();
            (state.image.clone(), missing, state.depth + 1)
        };
        let layer = install::Layer {
            parent: &parent,
            base_id: &state.base_id,
            specs: &to_install,
            requested: &requested,
            depth,
        };
        let install::Installed {
            image,
            before,
            packages,
        } = install::run(&self.sandbox, &self.config, &layer, on_line, cancel).await?;
        let installed = changed_packages(&before, &packages);
        self.replace_state(EnvState {
            image,
            base_id: state.base_id.clone(),
            packages,
            requested,
            depth,
        })
        .await;
        if rebuild {
            self.remove_superseded(&state.image).await;
        }
        tracing::info!(?installed, depth, "environment updated");
        Ok(InstallReport {
            installed,
            already_present,
            duration_ms: started.elapsed().as_millis() as u64,
            rebuilt: rebuild,
        })
    }

    /// Installs `--preinstalled` specs that are missing; costs one inspect when none are.
    pub async fn preinstall(&self) -> Result<Option<InstallReport>, InstallError> {
        if self.config.preinstalled.is_empty() {
            return Ok(None);
        }
        let log = |line: &str| tracing::info!(target: "pip", "{line}");
        let report = self
            .install(&self.config.preinstalled, &log, &CancellationToken::new())
            .await?;
        Ok(Some(report))
    }

    /// Forgets every installed package: removes the environment tag (and its images when
    /// nothing else uses them) and points executions back at the base.
    pub async fn reset(&self) -> Result<(), SandboxError> {
        let _changing = self.changing.lock().await;
        let state = self.ensure_loaded().await?;
        let base = self.sandbox.config().image.clone();
        self.replace_state(EnvState {
            image: base,
            base_id: state.base_id.clone(),
            ..EnvState::default()
        })
        .await;
        if state.depth > 0 {
            let docker = self.sandbox.docker().await?;
            let _ = docker
                .remove_image(&self.config.env_tag, None::<RemoveImageOptions>, None)
                .await;
            self.remove_superseded(&state.image).await;
        }
        Ok(())
    }

    /// Best-effort removal of an environment image no longer current (and its untagged
    /// parents); an image still used by a running container stays.
    async fn remove_superseded(&self, image: &str) {
        let Ok(docker) = self.sandbox.docker().await else {
            return;
        };
        if let Err(error) = docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await
        {
            tracing::debug!(%image, %error, "superseded image kept");
        }
    }
}

/// Distributions that are new or changed between two package maps, as `name==version`.
fn changed_packages(
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(key, (_, version))| before.get(*key).map(|(_, v)| v) != Some(version))
        .map(|(_, (name, version))| format!("{name}=={version}"))
        .collect()
}

fn parse_packages_label(labels: &HashMap<String, String>) -> BTreeMap<String, (String, String)> {
    let raw: BTreeMap<String, String> = labels
        .get(LABEL_PACKAGES)
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    normalize_package_map(raw)
}

/// Keys a `{name: version}` map by PEP 503-normalized name, keeping the display name.
pub fn normalize_package_map(raw: BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
    raw.into_iter()
        .map(|(name, version)| (normalize_name(&name), (name, version)))
        .collect()
}

/// PEP 503 name normalization: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
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
    fn names_are_normalized_like_pep_503() {
        assert_eq!(normalize_name("Zope.Interface"), "zope-interface");
        assert_eq!(normalize_name("scikit__learn"), "scikit-learn");
        assert_eq!(normalize_name("six"), "six");
    }

    #[test]
    fn changes_list_new_and_upgraded_distributions_only() {
        let before = normalize_package_map(BTreeMap::from([
            ("six".to_string(), "1.15.0".to_string()),
            ("idna".to_string(), "3.7".to_string()),
        ]));
        let after = normalize_package_map(BTreeMap::from([
            ("six".to_string(), "1.16.0".to_string()),
            ("idna".to_string(), "3.7".to_string()),
            ("Requests".to_string(), "2.32.3".to_string()),
        ]));
        assert_eq!(
            changed_packages(&before, &after),
            ["Requests==2.32.3", "six==1.16.0"]
        );
    }
}
