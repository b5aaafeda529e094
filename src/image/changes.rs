//! What an install may change in the image: the check every layer passes before it is
//! committed.
//!
//! pip runs as a user that can write `/opt/venv` and little else, but world-writable places
//! exist in any image and a wheel chooses its own file names. So the install container's
//! filesystem changes, as Docker reports them, are read before the commit: every path must be
//! inside `/opt/venv` (or be a directory above it that Docker lists as modified because
//! something below it changed), and inside it the files that decide how Python and pip start
//! stay exactly as the base has them. Pure: the caller fetches the list and acts on the
//! verdict.

/// The one tree an install may change.
pub const VENV: &str = "/opt/venv";
/// Where Docker mounts its init (`init: true`): it creates the mount point in the container's
/// layer itself, as `/sbin/docker-init`, which is `/usr/sbin/docker-init` on merged-/usr
/// systems such as Debian 12. The installer cannot write there (root-owned).
const INIT_MOUNT_POINTS: [&str; 2] = ["/sbin/docker-init", "/usr/sbin/docker-init"];

/// One change Docker reports for a container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// Docker's change kinds (0, 1 and 2 in its API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

/// Why a layer is refused: the first offending path, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: String,
    pub why: &'static str,
}

/// Checks every change; the first one an install may not make refuses the whole layer.
pub fn check(changes: &[Change]) -> Result<(), Refusal> {
    changes.iter().try_for_each(check_one)
}

fn check_one(change: &Change) -> Result<(), Refusal> {
    let path = change.path.trim_end_matches('/');
    let refuse = |why| {
        Err(Refusal {
            path: change.path.clone(),
            why,
        })
    };
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.eq_ignore_ascii_case("pip.conf") || name.eq_ignore_ascii_case("pip.ini") {
        return refuse("a pip configuration file would change how later installs run");
    }
    let Some(inside) = path.strip_prefix(VENV) else {
        // Directories above the venv (and above the init's mount point) are listed as
        // modified when something below them changed. Podman also lists `/etc` itself as
        // modified (it prepares the mount points of the hosts, hostname and resolv.conf files
        // it binds there); a change to anything in it is listed, and refused, on its own.
        let allowed = match change.kind {
            ChangeKind::Modified => {
                ["", "/opt", "/usr", "/usr/sbin", "/sbin", "/etc"].contains(&path)
            }
            ChangeKind::Added => INIT_MOUNT_POINTS.contains(&path),
            ChangeKind::Deleted => false,
        };
        return if allowed {
            Ok(())
        } else {
            refuse("installs may change /opt/venv only")
        };
    };
    if !inside.is_empty() && !inside.starts_with('/') {
        // `/opt/venvX` is not inside the venv.
        return refuse("installs may change /opt/venv only");
    }
    let inside = inside.trim_start_matches('/');
    if inside == "pyvenv.cfg" || inside == "lib64" {
        return refuse("the virtual environment's own configuration must stay as the base has it");
    }
    if let Some(script) = inside.strip_prefix("bin/")
        && is_interpreter_name(script)
    {
        return refuse("the interpreter links in /opt/venv/bin must stay as the base has them");
    }
    if inside == ".pyexec-tmp" || inside.starts_with(".pyexec-tmp/") {
        return refuse("the installer's scratch directory must be gone before a commit");
    }
    if change.kind == ChangeKind::Deleted && is_skeleton(inside) {
        return refuse("the virtual environment's directories must stay");
    }
    Ok(())
}

/// `python`, `python3`, `python3.11`, …: the names the venv's interpreter links have.
fn is_interpreter_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python") else {
        return false;
    };
    let Some(minor) = rest.strip_prefix('3') else {
        return rest.is_empty();
    };
    minor.is_empty()
        || minor
            .strip_prefix('.')
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// The venv itself and the directories every import and script goes through.
fn is_skeleton(inside: &str) -> bool {
    let parts: Vec<&str> = inside.split('/').collect();
    match parts.as_slice() {
        [""] | ["bin"] | ["lib"] => true,
        ["lib", version] => version.starts_with("python"),
        ["lib", version, "site-packages"] => version.starts_with("python"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, path: &str) -> Change {
        Change {
            path: path.to_string(),
            kind,
        }
    }

    fn verdict(kind: ChangeKind, path: &str) -> Result<(), Refusal> {
        check(&[change(kind, path)])
    }

    use ChangeKind::{Added, Deleted, Modified};

    #[test]
    fn package_files_and_scripts_inside_the_venv_are_allowed() {
        for (kind, path) in [
            (Modified, "/opt"),
            (Modified, "/etc"),
            (Modified, "/opt/venv"),
            (Modified, "/opt/venv/lib/python3.11/site-packages"),
            (Added, "/opt/venv/lib/python3.11/site-packages/six.py"),
            (Added, "/opt/venv/lib/python3.11/site-packages/evil.pth"),
            (
                Deleted,
                "/opt/venv/lib/python3.11/site-packages/six-1.15.0.dist-info",
            ),
            (Added, "/opt/venv/bin/numpy-config"),
            (Added, "/opt/venv/bin/python-dotenv"),
            (Added, "/opt/venv/bin/timeout"),
            (Added, "/opt/venv/share/jupyter/kernel.json"),
            (
                Added,
                "/opt/venv/include/site/python3.11/greenlet/greenlet.h",
            ),
        ] {
            assert_eq!(verdict(kind, path), Ok(()), "{path}");
        }
    }

    #[test]
    fn anything_outside_the_venv_is_refused_with_its_path() {
        for (kind, path) in [
            (Added, "/etc/cron.d/evil"),
            (Modified, "/etc/hosts"),
            (Added, "/etc/resolv.conf"),
            (Deleted, "/etc"),
            (Added, "/var/tmp/dropped"),
            (Modified, "/var/tmp"),
            (Modified, "/usr/bin/python3"),
            (Deleted, "/usr/bin/timeout"),
            (Added, "/opt/venvx/evil.py"),
            (Added, "/opt/pyexec/pip/__init__.py"),
            (Added, "/home/sandbox/.bashrc"),
            (Deleted, "/opt"),
            (Added, "/usr/sbin/evil"),
            (Modified, "/usr/sbin/docker-init"),
            (Deleted, "/usr/sbin"),
        ] {
            let refusal = verdict(kind, path).unwrap_err();
            assert_eq!(refusal.path, path);
            assert!(
                refusal.why.contains("/opt/venv only"),
                "{path}: {refusal:?}"
            );
        }
    }

    #[test]
    fn how_python_and_pip_start_stays_as_the_base_has_it() {
        for (kind, path) in [
            (Modified, "/opt/venv/bin/python3"),
            (Deleted, "/opt/venv/bin/python"),
            (Added, "/opt/venv/bin/python3.11"),
            (Modified, "/opt/venv/bin/python3.12"),
            (Modified, "/opt/venv/pyvenv.cfg"),
            (Modified, "/opt/venv/lib64"),
            (Added, "/opt/venv/pip.conf"),
            (Added, "/opt/venv/etc/pip.conf"),
            (Added, "/opt/venv/pip.ini"),
            (Added, "/etc/pip.conf"),
            (Added, "/opt/venv/.pyexec-tmp"),
            (Added, "/opt/venv/.pyexec-tmp/pip-unpack/x.py"),
            (Deleted, "/opt/venv"),
            (Deleted, "/opt/venv/bin"),
            (Deleted, "/opt/venv/lib/python3.11/site-packages"),
        ] {
            let refusal = verdict(kind, path).unwrap_err();
            assert_eq!(refusal.path, path, "{path}");
        }
    }

    #[test]
    fn interpreter_names_are_recognized_exactly() {
        for name in ["python", "python3", "python3.11", "python3.9"] {
            assert!(is_interpreter_name(name), "{name}");
        }
        for name in [
            "python-dotenv",
            "python3-config",
            "python3.",
            "pythonw",
            "ipython",
        ] {
            assert!(!is_interpreter_name(name), "{name}");
        }
    }

    #[test]
    fn the_first_bad_change_refuses_the_layer() {
        let changes = [
            change(Added, "/opt/venv/lib/python3.11/site-packages/ok.py"),
            change(Added, "/etc/evil"),
            change(Added, "/opt/venv/pip.conf"),
        ];
        assert_eq!(check(&changes).unwrap_err().path, "/etc/evil");
    }
}
