//! Where `PREINSTALLED_PACKAGES` (`--preinstalled`) stand, as executions see it: those that
//! arrive while the preinstall runs wait for it, and those after a failed one run without the
//! packages and say why.

use super::error::InstallError;

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

impl Preinstall {
    /// Where a finished preinstall stands: done, or failed with the first line of why.
    pub fn finished<T>(installed: &Result<T, InstallError>) -> Self {
        match installed {
            Ok(_) => Preinstall::Done,
            Err(error) => Preinstall::Failed(
                error
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        }
    }
}
