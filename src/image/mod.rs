//! The package environment: which image executions start from, and how `install_packages`
//! bakes packages into it as Docker image layers.
//!
//! The current environment is an image tagged `--env-tag` whose labels record everything
//! about it (installed distributions, requested specs, parent, base, depth), so a restart
//! knows what is installed from one `inspect` — no container, no install. An install runs pip
//! in a hardened container started from the current image (`install.rs`), checks and commits
//! the result as a new layer, and only then moves the tag and points later executions at it.
//! Installs are serialized by a lock within the process and by a lock file across processes
//! sharing the tag (`lock.rs`); under it the tag is read again, so no process builds on a
//! stale environment. Superseded layers are removed once no container uses them. Executions
//! never take either lock.

mod changes;
mod install;
mod lock;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::EnvironmentConfig;
use crate::labels::{
    LABEL_BASE, LABEL_DEPTH, LABEL_ENV, LABEL_PACKAGES, LABEL_PARENT, LABEL_REQUESTED,
};
use crate::packages::{PackageSpec, SpecError, parse_spec_list, parse_specs};
use crate::sandbox::{Sandbox, SandboxError};
pub use install::BaseImage;
pub use lock::LockError;

/// How long superseded layers still in use are retried at least (a session may hold one for
/// its whole lifetime: then as long as that), and how often: every 2 s at first, backing off
/// to every 10 s.
const COLLECT_FOR: Duration = Duration::from_secs(180);
const COLLECT_EVERY: Duration = Duration::from_secs(2);
const COLLECT_EVERY_MAX: Duration = Duration::from_secs(10);

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
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "pip failed (exit code {exit_code}); the environment is unchanged. pip's last lines:\n{tail}"
    )]
    PipFailed { exit_code: i64, tail: String },
    #[error(
        "pip found no wheel for {specs}: the index has it only as source (sdist), and source \
         builds are refused by default because they run the package's build code at install \
         time. The environment is unchanged. pip's last lines:\n{tail}\n\
         hint: to allow source builds, restart the server with --allow-sdist \
         (PYEXEC_ALLOW_SDIST=1)"
    )]
    NoWheel { specs: String, tail: String },
    #[error(
        "the install took longer than {seconds} s and was stopped; the environment is unchanged\n\
         hint: raise --install-timeout (PYEXEC_INSTALL_TIMEOUT)"
    )]
    TimedOut { seconds: u64 },
    #[error(
        "the install was refused: it changed {path} ({why}); nothing was committed and the \
         environment is unchanged"
    )]
    Refused { path: String, why: &'static str },
    #[error(
        "the install was refused: the {what} would be {} MiB, over the limit of {} MiB; nothing \
         was committed and the environment is unchanged\n\
         hint: raise {flag}, or start over with `mcp-python-executor packages reset`",
        size >> 20, limit >> 20
    )]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
        flag: &'static str,
    },
    #[error(
        "the base image {image} predates unprivileged installs (it has no installer user)\n\
         hint: rebuild it with `mcp-python-executor image build --force` (or `make image-rebuild`)"
    )]
    BaseOutdated { image: String },
    #[error("the install finished but its result could not be saved: {0}")]
    Commit(String),
}

/// What an install will do, decided from the current state alone.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallPlan {
    /// Requested specs the environment already satisfies, as `name==version`.
    pub already_present: Vec<String>,
    /// Every spec requested so far, this call's included, as the new layer records it.
    pub requested: Vec<String>,
    /// The container work, if any.
    pub action: Option<PlanAction>,
}

/// The container work of an install.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanAction {
    /// The image pip installs into: the current one, or the base for a rebuild.
    pub parent: String,
    /// What pip is given.
    pub specs: Vec<PackageSpec>,
    /// The new layer's depth above the base.
    pub depth: u32,
    /// True when the chain is at `--max-layers` and everything is installed again on the base.
    pub rebuild: bool,
}

/// Decides an install: what is present, what is missing, and whether the missing specs go on
/// a new layer or the whole requested list is installed again on the base in one layer.
pub fn plan(
    state: &EnvState,
    specs: &[PackageSpec],
    max_layers: u32,
) -> Result<InstallPlan, SpecError> {
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
    let mut requested = state.requested.clone();
    if missing.is_empty() {
        return Ok(InstallPlan {
            already_present,
            requested,
            action: None,
        });
    }
    for spec in &missing {
        requested
            .retain(|r| crate::packages::parse_spec(r).map(|p| p.name) != Ok(spec.name.clone()));
        requested.push(spec.requirement.clone());
    }
    let action = if state.depth >= max_layers {
        PlanAction {
            parent: state.base_id.clone(),
            // The accumulated list may be longer than one call's limit: it is not one call.
            specs: parse_spec_list(&requested)?,
            depth: 1,
            rebuild: true,
        }
    } else {
        PlanAction {
            parent: state.image.clone(),
            specs: missing.into_iter().cloned().collect(),
            depth: state.depth + 1,
            rebuild: false,
        }
    };
    Ok(InstallPlan {
        already_present,
        requested,
        action: Some(action),
    })
}

/// Where `PREINSTALLED_PACKAGES` stand: executions that arrive while they install wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preinstall {
    /// None asked for, or not this process's job (one-shot commands).
    NotAsked,
    /// Being checked or installed; executions wait.
    Running,
    /// Installed (or found installed).
    Done,
    /// The install failed; executions run without them and say so. The first line of why.
    Failed(String),
}

/// The current package environment and the locks that serialize changes to it.
pub struct Environment {
    /// Runs the install containers and is told which image executions use.
    sandbox: Arc<Sandbox>,
    /// Install settings.
    config: EnvironmentConfig,
    /// The loaded state; `None` until the first successful load. Held only briefly, so
    /// executions reading it never wait for an install.
    state: Mutex<Option<EnvState>>,
    /// Held for a whole install or reset: changes happen one at a time in this process (the
    /// lock file does the same across processes).
    changing: Mutex<()>,
    /// Where the preinstall stands; executions watch it.
    preinstall: tokio::sync::watch::Sender<Preinstall>,
    /// The specs of the install under way in this process, and when it started.
    installing: std::sync::Mutex<Option<(Vec<String>, Instant)>>,
}

impl Environment {
    pub fn new(sandbox: Arc<Sandbox>, config: EnvironmentConfig) -> Self {
        Self {
            sandbox,
            config,
            state: Mutex::new(None),
            changing: Mutex::new(()),
            preinstall: tokio::sync::watch::Sender::new(Preinstall::NotAsked),
            installing: std::sync::Mutex::new(None),
        }
    }

    /// Marks the preinstall as under way before it starts (the server calls this before it
    /// answers anything), so that an execution arriving first waits for it.
    pub fn expect_preinstall(&self) {
        if !self.config.preinstalled.is_empty() {
            self.preinstall.send_replace(Preinstall::Running);
        }
    }

    /// Watches where the preinstall stands.
    pub fn preinstall_state(&self) -> tokio::sync::watch::Receiver<Preinstall> {
        self.preinstall.subscribe()
    }

    /// The install under way in this process, if any: its specs and how long it has run.
    pub fn install_in_progress(&self) -> Option<(Vec<String>, Duration)> {
        let installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        installing
            .as_ref()
            .map(|(specs, since)| (specs.clone(), since.elapsed()))
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

    /// Reads the tag again and follows it when another server moved it (an install or a
    /// reset of its own); returns whether the current image changed. Skipped while this
    /// process is changing the environment itself.
    pub async fn follow_tag(&self) -> Result<bool, SandboxError> {
        let Ok(_changing) = self.changing.try_lock() else {
            return Ok(false);
        };
        let loaded = self.load().await?;
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|s| s.image == loaded.image) {
            return Ok(false);
        }
        tracing::info!(image = %loaded.image, "the package environment moved; following it");
        self.sandbox.set_current_image(&loaded.image);
        *state = Some(loaded);
        Ok(true)
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
    /// pip succeeds and the layer passes its checks and is committed.
    pub async fn install<S: AsRef<str>>(
        &self,
        specs: &[S],
        on_line: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<InstallReport, InstallError> {
        let specs = parse_specs(specs)?;
        let started = Instant::now();
        let report = |plan: InstallPlan, installed, rebuilt| InstallReport {
            installed,
            already_present: plan.already_present,
            duration_ms: started.elapsed().as_millis() as u64,
            rebuilt,
        };
        // Everything already there: answered from memory, no lock, no Docker request.
        let known = self.ensure_loaded().await?;
        let quick = plan(&known, &specs, self.config.max_layers)?;
        if quick.action.is_none() {
            return Ok(report(quick, Vec::new(), false));
        }
        let _changing = self.changing.lock().await;
        let _shown = Installing::start(&self.installing, &specs);
        let _lock =
            lock::EnvLock::acquire(&self.config.state_dir, &self.config.env_tag, cancel).await?;
        // Under the lock the tag is the truth: another server may have moved it.
        let state = self.load().await?;
        let decided = plan(&state, &specs, self.config.max_layers)?;
        let Some(action) = decided.action.clone() else {
            self.replace_state(state).await;
            return Ok(report(decided, Vec::new(), false));
        };
        let docker = self.sandbox.docker().await?;
        let base = install::base_image(docker, &self.sandbox.config().image).await?;
        let layer = install::Layer {
            parent: &action.parent,
            base: &base,
            specs: &action.specs,
            requested: &decided.requested,
            depth: action.depth,
        };
        let install::Installed {
            image,
            before,
            packages,
        } = install::run(&self.sandbox, &self.config, &layer, on_line, cancel).await?;
        let installed = changed_packages(&before, &packages);
        self.replace_state(EnvState {
            image,
            base_id: base.id.clone(),
            packages,
            requested: decided.requested.clone(),
            depth: action.depth,
        })
        .await;
        self.collect_superseded().await;
        tracing::info!(?installed, depth = action.depth, "environment updated");
        Ok(report(decided, installed, action.rebuild))
    }

    /// Installs `--preinstalled` specs that are missing; costs one inspect when none are.
    /// Executions wait for it while it runs (see [`Preinstall`]).
    pub async fn preinstall(&self) -> Result<Option<InstallReport>, InstallError> {
        if self.config.preinstalled.is_empty() {
            return Ok(None);
        }
        self.preinstall.send_replace(Preinstall::Running);
        let log = |line: &str| tracing::info!(target: "pip", "{line}");
        let installed = self
            .install(&self.config.preinstalled, &log, &CancellationToken::new())
            .await;
        self.preinstall.send_replace(match &installed {
            Ok(_) => Preinstall::Done,
            Err(error) => Preinstall::Failed(
                error
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        });
        Ok(Some(installed?))
    }

    /// Forgets every installed package: removes the environment tag (and its images when
    /// nothing else uses them) and points executions back at the base.
    pub async fn reset(&self) -> Result<(), InstallError> {
        let _changing = self.changing.lock().await;
        let _lock = lock::EnvLock::acquire(
            &self.config.state_dir,
            &self.config.env_tag,
            &CancellationToken::new(),
        )
        .await?;
        let state = self.load().await?;
        let base = self.sandbox.config().image.clone();
        self.replace_state(EnvState {
            image: base,
            base_id: state.base_id.clone(),
            ..EnvState::default()
        })
        .await;
        let docker = self.sandbox.docker().await?;
        let _ = docker
            .remove_image(&self.config.env_tag, None::<RemoveImageOptions>, None)
            .await;
        self.collect_superseded().await;
        Ok(())
    }

    /// Removes this tag's layers that are no longer in its chain, now; those a container
    /// still uses (a warm container being replaced, a call or a session still running) are
    /// retried in the background for a few minutes or a session's lifetime, whichever is
    /// longer, and by every later install.
    async fn collect_superseded(&self) {
        let Ok(docker) = self.sandbox.docker().await else {
            return;
        };
        if collect(docker, &self.config.env_tag).await == 0 {
            return;
        }
        let (docker, config) = (docker.clone(), self.config.clone());
        let sandbox = self.sandbox.config();
        let longest = COLLECT_FOR.max(sandbox.sessions.max_age + sandbox.limits.timeout * 2);
        tokio::spawn(async move {
            let deadline = Instant::now() + longest;
            let mut every = COLLECT_EVERY;
            while Instant::now() < deadline {
                tokio::time::sleep(every).await;
                every = (every * 2).min(COLLECT_EVERY_MAX);
                // A running install of any server owns the chain: skip its round.
                let Some(_lock) = lock::EnvLock::try_acquire(&config.state_dir, &config.env_tag)
                else {
                    continue;
                };
                if collect(&docker, &config.env_tag).await == 0 {
                    return;
                }
            }
        });
    }
}

/// One round of removing `env_tag`'s superseded layers; returns how many are still in use.
async fn collect(docker: &bollard::Docker, env_tag: &str) -> usize {
    let options = ListImagesOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_ENV}={env_tag}")],
        )])),
        ..Default::default()
    };
    let Ok(listed) = docker.list_images(Some(options)).await else {
        return 0;
    };
    // The tag is read after the listing: a layer committed in between is not listed, and
    // its parent is in the chain read here.
    let head = docker
        .inspect_image(env_tag)
        .await
        .ok()
        .and_then(|image| image.id);
    let layers: Vec<(String, Option<String>, u32)> = listed
        .into_iter()
        .map(|image| {
            let depth = image
                .labels
                .get(LABEL_DEPTH)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let parent = image.labels.get(LABEL_PARENT).cloned();
            (image.id, parent, depth)
        })
        .collect();
    let mut in_use = 0;
    for id in superseded(&layers, head.as_deref()) {
        match docker
            .remove_image(&id, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_) => tracing::debug!(image = %id, "superseded layer removed"),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => {
                tracing::debug!(image = %id, %error, "superseded layer still in use; retrying later");
                in_use += 1;
            }
        }
    }
    in_use
}

/// The layers not in the chain below `head`, children before parents. Pure.
fn superseded(layers: &[(String, Option<String>, u32)], head: Option<&str>) -> Vec<String> {
    let parents: HashMap<&str, &str> = layers
        .iter()
        .filter_map(|(id, parent, _)| Some((id.as_str(), parent.as_deref()?)))
        .collect();
    let mut chain = HashSet::new();
    let mut next = head;
    while let Some(id) = next {
        if !chain.insert(id) {
            break;
        }
        next = parents.get(id).copied();
    }
    let mut gone: Vec<&(String, Option<String>, u32)> = layers
        .iter()
        .filter(|(id, _, _)| !chain.contains(id.as_str()))
        .collect();
    gone.sort_by_key(|layer| std::cmp::Reverse(layer.2));
    gone.into_iter().map(|(id, _, _)| id.clone()).collect()
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
/// Shows an install as under way for as long as it lives.
struct Installing<'a>(&'a std::sync::Mutex<Option<(Vec<String>, Instant)>>);

impl<'a> Installing<'a> {
    fn start(
        slot: &'a std::sync::Mutex<Option<(Vec<String>, Instant)>>,
        specs: &[PackageSpec],
    ) -> Self {
        let shown = specs.iter().map(|s| s.requirement.clone()).collect();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((shown, Instant::now()));
        Self(slot)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

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

    fn state(packages: &[(&str, &str)], requested: &[&str], depth: u32) -> EnvState {
        EnvState {
            image: "sha256:current".into(),
            base_id: "sha256:base".into(),
            packages: normalize_package_map(
                packages
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ),
            requested: requested.iter().map(|r| r.to_string()).collect(),
            depth,
        }
    }

    #[test]
    fn a_plan_with_everything_present_does_nothing() {
        let state = state(&[("six", "1.16.0")], &["six"], 1);
        let plan = plan(&state, &parse_specs(&["Six>=1"]).unwrap(), 20).unwrap();
        assert_eq!(plan.already_present, ["six==1.16.0"]);
        assert_eq!(plan.action, None);
    }

    #[test]
    fn missing_specs_go_on_a_new_layer_and_replace_older_requests_of_the_same_name() {
        let state = state(&[("six", "1.15.0")], &["six==1.15.0", "idna"], 1);
        let specs = parse_specs(&["six==1.16.0", "attrs"]).unwrap();
        let plan = plan(&state, &specs, 20).unwrap();
        assert!(plan.already_present.is_empty());
        assert_eq!(plan.requested, ["idna", "attrs", "six==1.16.0"]);
        let action = plan.action.unwrap();
        assert_eq!(action.parent, "sha256:current");
        assert_eq!(action.depth, 2);
        assert!(!action.rebuild);
        assert_eq!(action.specs.len(), 2);
    }

    #[test]
    fn at_the_layer_limit_everything_requested_is_installed_again_on_the_base() {
        // More specs than one call may give have accumulated: a rebuild still works.
        let requested: Vec<String> = (0..80).map(|i| format!("pkg{i}")).collect();
        let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
        let state = state(&[], &requested, 3);
        let plan = plan(&state, &parse_specs(&["extra"]).unwrap(), 3).unwrap();
        let action = plan.action.unwrap();
        assert!(action.rebuild);
        assert_eq!(action.parent, "sha256:base");
        assert_eq!(action.depth, 1);
        assert_eq!(action.specs.len(), 81);
    }

    #[test]
    fn superseded_layers_are_those_outside_the_chain_children_first() {
        let layer =
            |id: &str, parent: &str, depth| (id.to_string(), Some(parent.to_string()), depth);
        let layers = [
            layer("a1", "base", 1),
            layer("a2", "a1", 2),
            layer("a3", "a2", 3),
            layer("b1", "base", 1),
            layer("b2", "b1", 2),
        ];
        assert_eq!(superseded(&layers, Some("b2")), ["a3", "a2", "a1"]);
        assert_eq!(superseded(&layers, Some("a2")), ["a3", "b2", "b1"]);
        // No tag (a reset): every layer goes.
        assert_eq!(superseded(&layers, None).len(), 5);
    }

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
