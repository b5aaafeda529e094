//! The install lock that spans processes: two servers sharing one environment tag (a desktop
//! client and an IDE, say) change it one at a time.
//!
//! An exclusive `flock` on a file under the state directory, one file per environment tag.
//! The kernel releases it when its holder exits, however it exits, so a crashed server never
//! leaves a stale lock. It serializes the servers of one machine that share the state
//! directory (`--state-dir`); servers on other machines sharing a remote daemon are not. The
//! directory must be this user's own and the file is never opened through a link
//! (`private_dir`).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a waiting install asks for the lock again.
const POLL: Duration = Duration::from_millis(100);

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "cannot open the install lock {path}: {source}\n\
         hint: point --state-dir (PYEXEC_STATE_DIR) at a folder this user can write"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the install was cancelled while waiting for another server's install to finish")]
    Cancelled,
}

/// Held for one whole install or reset; dropping it releases the lock.
#[derive(Debug)]
pub struct EnvLock {
    /// The locked file; the lock goes with the descriptor.
    _file: File,
}

impl EnvLock {
    /// Waits for the lock of `env_tag` (cancel-aware).
    pub async fn acquire(
        dir: &Path,
        env_tag: &str,
        cancel: &CancellationToken,
    ) -> Result<Self, LockError> {
        let file = open(dir, env_tag)?;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Open {
                        path: lock_path(dir, env_tag),
                        source,
                    });
                }
            }
            if !told {
                tracing::info!(
                    tag = env_tag,
                    "waiting for another server's install to finish"
                );
                told = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err(LockError::Cancelled),
            }
        }
    }

    /// The lock if nobody holds it right now (background clean-ups skip a busy round).
    pub fn try_acquire(dir: &Path, env_tag: &str) -> Option<Self> {
        let file = open(dir, env_tag).ok()?;
        file.try_lock().ok()?;
        Some(Self { _file: file })
    }
}

fn open(dir: &Path, env_tag: &str) -> Result<File, LockError> {
    let path = lock_path(dir, env_tag);
    crate::private_dir::ensure(dir)
        .and_then(|()| crate::private_dir::open_lock(&path))
        .map_err(|source| LockError::Open { path, source })
}

/// One file per tag; characters a file name cannot hold become `_`.
fn lock_path(dir: &Path, env_tag: &str) -> PathBuf {
    let name: String = env_tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_name_cannot_leave_the_state_directory() {
        let dir = Path::new("/state");
        assert_eq!(
            lock_path(dir, "mcp-python-executor/env:current"),
            Path::new("/state/mcp-python-executor_env_current.lock")
        );
        assert_eq!(
            lock_path(dir, "../../etc/passwd:x"),
            Path::new("/state/.._.._etc_passwd_x.lock")
        );
    }

    #[tokio::test]
    async fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("pyexec-lock-{}", std::process::id()));
        let cancel = CancellationToken::new();
        let first = EnvLock::acquire(&dir, "t:1", &cancel).await.unwrap();
        assert!(EnvLock::try_acquire(&dir, "t:1").is_none());
        assert!(
            EnvLock::try_acquire(&dir, "t:2").is_some(),
            "tags lock apart"
        );
        let waiting = tokio::spawn({
            let dir = dir.clone();
            async move { EnvLock::acquire(&dir, "t:1", &CancellationToken::new()).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap().unwrap();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let _held = EnvLock::try_acquire(&dir, "t:3").unwrap();
        assert!(matches!(
            EnvLock::acquire(&dir, "t:3", &stopped).await,
            Err(LockError::Cancelled)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
