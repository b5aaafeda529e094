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
//! have its sessions reaped.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

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
