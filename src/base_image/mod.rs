//! The sandbox's base image, built through the engine's own API, so that it appears in
//! whichever engine `DOCKER_HOST` names (Docker, Podman, a remote daemon) and a user who has
//! only the binary needs one command: `mcp-python-executor image build` (`make image` calls it).
//!
//! Owns the recipe (images/Dockerfile, compiled into the binary and sent as a one-file tar
//! build context), its hash (the image's `mcp-python-executor.recipe` label, so an image built
//! from another recipe is rebuilt and an up-to-date one is left alone), the choice of base (the
//! registry's Python image when the engine has it or can pull it) and the offline path for
//! air-gapped hosts: a minimal Debian made by debootstrap (or a root filesystem the user
//! gives) is imported as an image through the same API, and the recipe is built on it.
//!
//! This file is the façade. The parts: `plan.rs` (what `image build` is asked, what it did),
//! `recipe.rs` (the Dockerfile, its hash, building it), `rootfs.rs` (the offline root
//! filesystem: debootstrap and import) and `build.rs` (the choice of base and the build).

mod build;
mod plan;
mod recipe;
mod rootfs;

pub use build::{build, remove};
pub use plan::{BuildPlan, Built, DEFAULT_BASE};
pub use recipe::{DOCKERFILE, recipe, recipe_of};
pub use rootfs::import_rootfs;
