//! Whether the server that owns a container is still alive, for the containers that cannot
//! say so themselves: a session's container is frozen between calls (the engine's pause), so
//! its runner cannot notice that its server's connection closed, as an unfrozen one does.
//!
//! A serving server holds an exclusive `flock` on `<state dir>/instances/<instance>.lock` for
//! its whole life; the kernel releases it however the process ends. A reaper that can take
//! the lock of a container's owner knows that owner is gone. A container whose owner has no
//! lock file here (another machine, another state directory) is unknown, never dead: it is
//! left to its deadline. The folder must be this user's own, and no lock is opened through a
//! link (`private_dir`): another local user who could swap a live server's lock file would
//! have its sessions reaped. [`Liveness`] is what a sandbox knows of all this: where the
//! locks are, and its own lock while it serves.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// One sandbox's view of the liveness locks.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Where servers' liveness locks live: the reaper asks there whether a frozen session's
    /// server is gone.
    instances: OnceLock<PathBuf>,
    /// While serving: this server's own liveness lock.
    alive: Mutex<Option<Alive>>,
}

impl Liveness {
    /// Lets the reaper ask the liveness locks under `state_dir` whether a frozen session's
    /// server is gone (a one-shot `exec` does, without holding a lock of its own).
    pub fn see(&self, state_dir: &Path) {
        let _ = self.instances.set(instances_dir(state_dir));
    }

    /// Holds the lock of `instance` under `state_dir` while it serves, so that another
    /// server's reaper can tell its frozen sessions from a dead server's.
    pub fn claim(&self, state_dir: &Path, instance: &str) {
        self.see(state_dir);
        let dir = instances_dir(state_dir);
        match claim(&dir, instance) {
            Ok(alive) => *self.alive.lock().unwrap_or_else(|e| e.into_inner()) = Some(alive),
            Err(error) => tracing::warn!(
                %error,
                dir = %dir.display(),
                "cannot hold this server's liveness lock: another server will reap its frozen \
                 sessions only at their deadline should it die"
            ),
        }
    }

    /// Where servers' liveness locks are, once known.
    pub fn instances_dir(&self) -> Option<PathBuf> {
        self.instances.get().cloned()
    }
}

/// The lock a serving server holds while it lives; dropped at shutdown (the file goes too).
#[derive(Debug)]
pub struct Alive {
    _file: File,
    path: PathBuf,
}

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where the instances' lock files live.
pub fn instances_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("instances")
}

/// Takes this server's lock, `instance` being its owner label's value.
pub fn claim(dir: &Path, instance: &str) -> std::io::Result<Alive> {
    if let Some(state_dir) = dir.parent() {
        crate::private_dir::ensure(state_dir)?;
    }
    crate::private_dir::ensure(dir)?;
    let path =
        lock_path(dir, instance).ok_or_else(|| std::io::Error::other("not an instance id"))?;
    let file = crate::private_dir::open_lock(&path)?;
    file.try_lock().map_err(|error| match error {
        TryLockError::WouldBlock => std::io::Error::other("the instance is locked already"),
        TryLockError::Error(error) => error,
    })?;
    Ok(Alive { _file: file, path })
}

/// Whether the server `instance` is known to be gone: its lock file is here, in a folder
/// only this user can write, and nobody holds it. The file is removed then (its server will
/// never take it again).
pub fn is_gone(dir: &Path, instance: &str) -> bool {
    let Some(path) = lock_path(dir, instance) else {
        return false;
    };
    if crate::private_dir::check(dir).is_err() || !path.exists() {
        return false;
    }
    let Ok(file) = crate::private_dir::open_lock(&path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(&path);
            true
        }
        Err(_) => false,
    }
}

/// The lock file of `instance`, only for an id as this server makes them (12 lowercase hex
/// digits): the label comes from Docker, where anyone with access to it may write any label,
/// and it must never name a path of its choosing.
fn lock_path(dir: &Path, instance: &str) -> Option<PathBuf> {
    let valid = instance.len() == 12
        && instance
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| dir.join(format!("{instance}.lock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_gone_only_when_its_lock_is_here_and_free() {
        let state = std::env::temp_dir().join(format!("pyexec-alive-{}", uuid::Uuid::new_v4()));
        let dir = instances_dir(&state);
        let alive = claim(&dir, "0123456789ab").unwrap();
        assert!(!is_gone(&dir, "0123456789ab"), "held: alive");
        assert!(claim(&dir, "0123456789ab").is_err(), "one holder");
        assert!(!is_gone(&dir, "ba9876543210"), "no file: unknown, not gone");
        drop(alive);
        assert!(
            !dir.join("0123456789ab.lock").exists(),
            "a clean stop takes its file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_released_lock_means_gone_and_its_file_is_removed() {
        let dir = std::env::temp_dir().join(format!("pyexec-alive-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("00000000000f.lock");
        std::fs::write(&path, "").unwrap();
        assert!(is_gone(&dir, "00000000000f"));
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_that_are_not_instance_ids_never_name_a_path() {
        let dir = Path::new("/tmp/x");
        for hostile in [
            "../../etc/passwd",
            "0123456789AB",
            "0123456789a",
            "",
            "0123456789ab/",
        ] {
            assert_eq!(lock_path(dir, hostile), None, "{hostile}");
            assert!(!is_gone(dir, hostile));
        }
    }
}
