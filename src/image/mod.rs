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
//!
//! This file is the façade: it declares the parts and re-exports what the rest of the crate
//! uses. The parts, each importing only those listed before it:
//! - `plan.rs`: the pure decisions (state from labels, the install plan, superseded layers,
//!   changed packages, PEP 503 names); `lock.rs`: the lock file; `changes.rs`: what a layer
//!   may change;
//! - `error.rs`: `InstallError`; `preinstall.rs`: where the preinstall stands;
//! - `layer.rs`: what one install builds on; `pip_output.rs`: the install's output;
//!   `layer_check.rs`: the checks before a commit; `commit.rs`: the commit;
//! - `install.rs`: one install, step by step; `collect.rs`: removing superseded layers;
//! - `environment.rs`: `Environment`, the current state and the changes to it.

mod changes;
mod collect;
mod commit;
mod environment;
mod error;
mod install;
mod layer;
mod layer_check;
mod lock;
mod pip_output;
mod plan;
mod preinstall;

pub use environment::{Environment, InstallReport};
pub use error::InstallError;
pub use layer::BaseImage;
pub use lock::LockError;
pub use plan::{EnvState, InstallPlan, PlanAction, normalize_name, normalize_package_map, plan};
pub use preinstall::Preinstall;
