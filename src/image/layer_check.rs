//! The checks a finished install container passes before anything is committed: Docker's
//! list of its filesystem changes must pass `changes::check`, and the layer must fit
//! `--max-layer-size` and, with the environment below it, `--max-env-size`.

use bollard::models::ChangeType;
use bollard::query_parameters::InspectContainerOptions;

use crate::settings::EnvironmentConfig;

use super::changes::{self, Change, ChangeKind};
use super::error::InstallError;

/// Refuses a layer that changes anything but `/opt/venv` (or what must stay there), or that
/// is over the size limits. Nothing is committed when this fails.
pub async fn check_layer(
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
}
