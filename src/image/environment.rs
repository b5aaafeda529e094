//! The current package environment (`Environment`): which image executions start from, and
//! the one-at-a-time changes to it (install, preinstall, reset).
//!
//! The state is read from the environment tag's labels once and kept in memory, so
//! executions never wait for an install; a change takes the in-process lock and then the
//! lock file shared with other servers (`lock.rs`), reads the tag again under it (another
//! server may have moved it), decides with `plan.rs`, builds with `install.rs`, and only then
//! moves what executions use. Superseded layers are collected afterwards (`collect.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::RemoveImageOptions;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::packages::{PackageSpec, parse_specs};
use crate::sandbox::{Sandbox, SandboxError};
use crate::settings::EnvironmentConfig;

use super::collect::collect_superseded;
use super::error::InstallError;
use super::install::{self, Installed};
use super::layer::{Layer, base_image};
use super::lock;
use super::plan::{EnvState, InstallPlan, changed_packages, plan, recorded_state};
use super::preinstall::Preinstall;
use crate::tasks::Background;

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
    /// The retries of superseded-layer removal, ended by [`Environment::stop`].
    background: Background,
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
            background: Background::new(),
        }
    }

    /// Ends the environment's background work (retried removals of superseded layers) and
    /// waits for it: part of the server's shutdown.
    pub async fn stop(&self) {
        self.background.stop().await;
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
            .map_err(|e| crate::engine::classify(e, "inspect the base image", base))?
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
        let image = env.id.unwrap_or_else(|| self.config.env_tag.clone());
        match recorded_state(image, &base_id, &labels) {
            Some(state) => Ok(state),
            None => {
                tracing::warn!(
                    tag = %self.config.env_tag,
                    "the package environment was built on another base image; starting from the base"
                );
                Ok(fresh)
            }
        }
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
        let base = base_image(docker, &self.sandbox.config().image).await?;
        let layer = Layer {
            parent: &action.parent,
            base: &base,
            specs: &action.specs,
            requested: &decided.requested,
            depth: action.depth,
        };
        let Installed {
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
        collect_superseded(&self.sandbox, &self.config, &self.background).await;
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
        // Stopped at shutdown (its future dropped), it is over all the same: calls still
        // waiting for it go on and are told the server is shutting down.
        let _over = PreinstallOver(&self.preinstall);
        let log = |line: &str| tracing::info!(target: "pip", "{line}");
        let installed = self
            .install(&self.config.preinstalled, &log, &CancellationToken::new())
            .await;
        self.preinstall
            .send_replace(Preinstall::finished(&installed));
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
        collect_superseded(&self.sandbox, &self.config, &self.background).await;
        Ok(())
    }
}

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

/// Marks a preinstall that never finished (its future dropped at shutdown) as failed, so
/// nothing waits for it any more.
struct PreinstallOver<'a>(&'a tokio::sync::watch::Sender<Preinstall>);

impl Drop for PreinstallOver<'_> {
    fn drop(&mut self) {
        self.0.send_if_modified(|state| {
            let running = matches!(state, Preinstall::Running);
            if running {
                *state = Preinstall::Failed(SandboxError::ShuttingDown.to_string());
            }
            running
        });
    }
}
