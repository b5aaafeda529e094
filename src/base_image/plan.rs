//! What `image build` is asked to do and what it did: the values the command line makes
//! (`config/`) and the build reads.

use std::path::PathBuf;

/// The registry base used when the engine has it or can pull it.
pub const DEFAULT_BASE: &str = "python:3.12-slim";

/// What `image build` is asked to do.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The image to build (the server's `--image`).
    pub tag: String,
    /// The registry base tried first.
    pub base: String,
    /// Rebuild even when the image is up to date (and re-import the offline root filesystem).
    pub force: bool,
    /// Skip the registry base: build on an imported Debian root filesystem.
    pub offline: bool,
    /// A root filesystem (with python3 and python3-venv) to import instead of debootstrapping.
    pub rootfs: Option<PathBuf>,
    /// Debian suite, mirror and package cache for debootstrap.
    pub suite: String,
    pub mirror: String,
    pub cache: PathBuf,
}

impl BuildPlan {
    /// The tag the offline root filesystem is imported as.
    pub fn rootfs_tag(&self) -> String {
        format!("mcp-python-executor/rootfs:{}", self.suite)
    }
}

/// What `image build` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image was already built from this recipe; nothing was done.
    UpToDate,
    /// The image was built on this base.
    On(String),
}
