//! `image build`'s flags (`ImageBuildArgs`): how the base image is made; resolved into the
//! build plan, refusing a suite or mirror debootstrap would read as an option.

use clap::Args;

/// `image build`: how the base image is made (the image's name is the global `--image`).
/// The variables without `PYEXEC_` are those images/bootstrap-offline.sh has always read.
#[derive(Debug, Clone, Args)]
pub struct ImageBuildArgs {
    /// Rebuild even when the image is up to date (and debootstrap again on the offline path)
    #[arg(long, env = "PYEXEC_IMAGE_FORCE")]
    pub force: bool,

    /// Registry base tried first (used when the engine has it or can pull it)
    #[arg(long, env = "PYEXEC_BASE_IMAGE", value_name = "IMAGE",
          default_value = crate::base_image::DEFAULT_BASE)]
    pub base: String,

    /// Skip the registry base: build on a Debian root filesystem imported into the engine
    #[arg(long, env = "PYEXEC_OFFLINE")]
    pub offline: bool,

    /// Root filesystem to import for the offline path instead of debootstrapping one
    /// (a Debian with python3 and python3-venv)
    #[arg(long, env = "PYEXEC_ROOTFS", value_name = "DIR")]
    pub rootfs: Option<std::path::PathBuf>,

    /// Debian suite debootstrap installs on the offline path
    #[arg(
        long,
        env = "DEBIAN_SUITE",
        default_value = "bookworm",
        value_name = "SUITE"
    )]
    pub debian_suite: String,

    /// Debian mirror debootstrap reads (a local mirror on air-gapped hosts)
    #[arg(
        long,
        env = "DEBIAN_MIRROR",
        default_value = "http://deb.debian.org/debian",
        value_name = "URL"
    )]
    pub debian_mirror: String,

    /// Where debootstrap keeps the packages it fetched, for the next build
    #[arg(
        long,
        env = "DEBOOTSTRAP_CACHE",
        value_name = "DIR",
        default_value = "/var/cache/mcp-python-executor/debootstrap"
    )]
    pub debootstrap_cache: std::path::PathBuf,
}

impl ImageBuildArgs {
    /// The plan for building `image`, checked.
    pub fn resolve(&self, image: &str) -> anyhow::Result<crate::base_image::BuildPlan> {
        // Both go to debootstrap's command line: neither may read as an option there.
        let suite_ok = self
            .debian_suite
            .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .debian_suite
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !suite_ok {
            anyhow::bail!(
                "--debian-suite (DEBIAN_SUITE) must be a Debian suite name such as bookworm, \
                 not {:?}",
                self.debian_suite
            );
        }
        let mirror_ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|scheme| self.debian_mirror.starts_with(scheme))
            && !self.debian_mirror.contains(char::is_whitespace);
        if !mirror_ok {
            anyhow::bail!(
                "--debian-mirror (DEBIAN_MIRROR) must be an http://, https:// or file:/// URL, \
                 not {:?}",
                self.debian_mirror
            );
        }
        if let Some(dir) = &self.rootfs
            && !dir.is_dir()
        {
            anyhow::bail!(
                "--rootfs (PYEXEC_ROOTFS) {} is not a directory",
                dir.display()
            );
        }
        Ok(crate::base_image::BuildPlan {
            tag: image.to_string(),
            base: self.base.clone(),
            force: self.force,
            offline: self.offline || self.rootfs.is_some(),
            rootfs: self.rootfs.clone(),
            suite: self.debian_suite.clone(),
            mirror: self.debian_mirror.clone(),
            cache: self.debootstrap_cache.clone(),
        })
    }
}
