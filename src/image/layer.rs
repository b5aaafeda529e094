//! What one install builds: the layer's description (parent, specs, depth, what is recorded
//! on it) and the base image at the bottom of the chain, whose config every committed layer
//! keeps. Reading the base refuses one built before installs ran unprivileged.

use crate::engine::classify;
use crate::labels::{BASE_LAYOUT, LABEL_LAYOUT};
use crate::packages::PackageSpec;
use crate::sandbox::SandboxError;

use super::error::InstallError;

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
