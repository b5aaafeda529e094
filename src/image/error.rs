//! Why an install did not happen: `InstallError`, every variant of which leaves the
//! environment unchanged, and the reading of pip's failure output that decides between a
//! plain failure and "the index has it only as source".

use crate::packages::SpecError;
use crate::sandbox::SandboxError;

use super::lock::LockError;
use super::plan::normalize_name;

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

/// The error for a pip that exited non-zero. A requested name counts as source-only when pip
/// found no version of it at all (sdists refused) and the driver found that the index has
/// versions of it in some format: then the answer says so and how to allow source builds.
pub fn pip_failure(exit_code: i64, tail: &[String], source_only: &[String]) -> InstallError {
    let none = no_version_found(tail);
    let source_only: Vec<&str> = source_only
        .iter()
        .filter(|name| none.contains(&normalize_name(name)))
        .map(String::as_str)
        .collect();
    let tail = tail.join("\n");
    if source_only.is_empty() {
        InstallError::PipFailed { exit_code, tail }
    } else {
        InstallError::NoWheel {
            specs: source_only.join(", "),
            tail,
        }
    }
}

/// The normalized names pip found no version of at all (`… (from versions: none)`).
fn no_version_found(tail: &[String]) -> Vec<String> {
    const START: &str = "Could not find a version that satisfies the requirement ";
    tail.iter()
        .filter_map(|line| {
            let rest = &line[line.find(START)? + START.len()..];
            let (requirement, after) = rest.split_once(' ')?;
            let name_end = requirement
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                .unwrap_or(requirement.len());
            after
                .contains("(from versions: none)")
                .then(|| normalize_name(&requirement[..name_end]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_only_package_is_named_with_the_flag_that_allows_it() {
        let tail = [
            "ERROR: Could not find a version that satisfies the requirement docopt (from versions: none)".to_string(),
        ];
        let error = pip_failure(1, &tail, &["docopt".to_string()]).to_string();
        assert!(error.contains("docopt"), "{error}");
        assert!(error.contains("only as source"), "{error}");
        assert!(error.contains("--allow-sdist"), "{error}");
        assert!(error.contains("PYEXEC_ALLOW_SDIST"), "{error}");
        // No source-only finding: a plain failure (no such package, or no fitting version).
        assert!(matches!(
            pip_failure(1, &tail, &[]),
            InstallError::PipFailed { .. }
        ));
        // The index has versions, but pip failed for another reason (a broken wheel).
        let broken = ["ERROR: For req: docopt. Unknown scheme key used".to_string()];
        assert!(matches!(
            pip_failure(1, &broken, &["docopt".to_string()]),
            InstallError::PipFailed { .. }
        ));
        let pinned = ["ERROR: Could not find a version that satisfies the requirement Doc_Opt==0.6 (from versions: none)".to_string()];
        assert!(matches!(
            pip_failure(1, &pinned, &["doc-opt".to_string()]),
            InstallError::NoWheel { .. }
        ));
    }
}
