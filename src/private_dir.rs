//! Folders and files the server keeps for itself under `--state-dir` (the install locks, the
//! liveness locks): what another local user could touch there, they could turn against the
//! server (delete a live server's sessions by swapping its liveness lock, make it create files
//! where a link points, hold the install lock forever). So such a folder must be this user's
//! own, a real folder (not a link) that nobody else may write, and the files in it are opened
//! without following links.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Makes `dir` (and its missing parents, 0700) and checks that it is this user's own: a
/// folder, not a link, owned by this user, writable by nobody else.
pub fn ensure(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check(dir)
}

/// Whether `dir` is this user's own folder (see [`ensure`]).
pub fn check(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if meta.file_type().is_symlink() {
        Some("is a link".to_string())
    } else if !meta.is_dir() {
        Some("is not a folder".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "belongs to uid {}, not to this user ({me})",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by others (mode {:o})",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}: another local user could turn what the server keeps there against \
                 it; point --state-dir (PYEXEC_STATE_DIR) at a folder only this user can write",
                dir.display()
            ),
        )),
    }
}

/// Opens (creating, 0600) a lock file in a folder [`ensure`] accepted, never through a link.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_others_may_write_or_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("pyexec-private-{}", uuid::Uuid::new_v4()));
        let own = base.join("own/deeper");
        ensure(&own).unwrap();
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o700);
        let shared = base.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = ensure(&shared).unwrap_err().to_string();
        assert!(
            error.contains("writable by others") && error.contains("--state-dir"),
            "{error}"
        );
        let link = base.join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(ensure(&link).unwrap_err().to_string().contains("is a link"));
        let target = base.join("target");
        std::os::unix::fs::symlink(&target, own.join("x.lock")).unwrap();
        assert!(
            open_lock(&own.join("x.lock")).is_err(),
            "no lock through a link"
        );
        assert!(!target.exists(), "nothing created where the link points");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
