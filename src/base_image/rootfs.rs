//! The offline path for air-gapped hosts: a minimal Debian made by debootstrap (or a root
//! filesystem the user gives) is imported as an image through the engine's API, to build the
//! recipe on. The archive is made here and keeps links as links, so nothing of the host is
//! read through one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bytes::Bytes;
use futures::StreamExt;

use super::plan::BuildPlan;

/// What the imported root filesystem's image is told (as `docker import --change`).
const ROOTFS_CHANGES: [&str; 3] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "CMD [\"python3\"]",
];

/// The offline path's base: the imported root filesystem, imported from `--rootfs` or made
/// by debootstrap unless it is there already (`--force` makes it again). Returns its tag.
pub async fn offline_base(
    docker: &Docker,
    plan: &BuildPlan,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<String> {
    let rootfs_tag = plan.rootfs_tag();
    let missing = async || docker.inspect_image(&rootfs_tag).await.is_err();
    if plan.force || plan.rootfs.is_some() || missing().await {
        match &plan.rootfs {
            Some(dir) => {
                say(&format!("importing {} as {rootfs_tag}", dir.display()));
                import_rootfs(docker, dir, &rootfs_tag).await?;
            }
            None => {
                let made = debootstrap(plan, say).await?;
                say(&format!("importing the root filesystem as {rootfs_tag}"));
                import_rootfs(docker, made.path(), &rootfs_tag).await?;
            }
        }
    } else {
        say(&format!("reusing {rootfs_tag} (--force makes it again)"));
    }
    Ok(rootfs_tag)
}

/// Imports the root filesystem under `dir` as the image `tag` (as `docker import` does),
/// streamed as a tar made here: symbolic links are archived as links, never followed, so an
/// absolute link in the tree can never pull a file of this host into the image.
pub async fn import_rootfs(docker: &Docker, dir: &Path, tag: &str) -> anyhow::Result<()> {
    if !dir.join("usr").is_dir() {
        bail!(
            "{} does not look like a root filesystem (no usr/)\n\
             hint: pass a debootstrapped Debian with python3 and python3-venv, or leave \
             --rootfs out to debootstrap one",
            dir.display()
        );
    }
    // The tag goes in `repo` ("the repo may include a tag"): Podman 4.3 ignores `tag` here.
    let changes = ROOTFS_CHANGES
        .iter()
        .map(|change| change.to_string())
        .collect();
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(tag)
        .changes(changes)
        .build();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let root = dir.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let outcome = write_tar(&root, ChannelWriter(sender.clone()));
        if let Err(error) = &outcome {
            let _ = sender.blocking_send(Err(std::io::Error::new(error.kind(), error.to_string())));
        }
        outcome
    });
    let body = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    let mut failure = None;
    while let Some(item) = progress.next().await {
        if let Err(error) = item {
            failure = Some(error);
            break;
        }
    }
    drop(progress);
    let archived = writer.await.context("the archiving task failed")?;
    if let Err(error) = archived {
        bail!("cannot archive {}: {error}", dir.display());
    }
    if let Some(error) = failure {
        bail!(
            "the engine could not import {} as {tag}: {error}",
            dir.display()
        );
    }
    Ok(())
}

/// Writes `root` as a tar: owners, modes and device numbers as they are, links as links.
fn write_tar(root: &Path, sink: impl Write) -> std::io::Result<()> {
    let mut archive = tar::Builder::new(std::io::BufWriter::with_capacity(256 << 10, sink));
    archive.follow_symlinks(false);
    archive.mode(tar::HeaderMode::Complete);
    archive.append_dir_all("", root)?;
    archive.into_inner()?.flush()
}

/// A `Write` that hands what it is given to the engine's request body.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(data)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped reading")
            })?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory removed when dropped, whatever happened.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes a minimal Debian with python3 under a scratch directory (removed when dropped).
async fn debootstrap(plan: &BuildPlan, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Scratch> {
    let target = Scratch(
        std::env::temp_dir().join(format!("pyexec-rootfs.{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&plan.cache).with_context(|| {
        format!(
            "cannot create the debootstrap cache {}",
            plan.cache.display()
        )
    })?;
    say(&format!(
        "debootstrapping Debian {} with python3 from {} (a few minutes)",
        plan.suite, plan.mirror
    ));
    let output = tokio::process::Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--cache-dir={}", plan.cache.display()))
        .arg("--include=python3,python3-venv,ca-certificates")
        .arg(&plan.suite)
        .arg(target.path())
        .arg(&plan.mirror)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "debootstrap is not installed\nhint: apt-get install debootstrap, or pass --rootfs \
             DIR with a Debian root filesystem that has python3 and python3-venv"
        ),
        Err(error) => bail!("cannot run debootstrap: {error}"),
    };
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = said.lines().rev().take(8).collect();
        bail!(
            "debootstrap failed ({}): {}\nhint: it needs root and a reachable Debian mirror \
             (--debian-mirror or DEBIAN_MIRROR)",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    trim(target.path());
    Ok(target)
}

/// Removes what a sandbox never needs from a fresh debootstrap; python and its standard
/// library stay whole.
fn trim(root: &Path) {
    for dir in [
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "var/log",
        "tmp",
    ] {
        empty(&root.join(dir), |_| true);
    }
    empty(&root.join("var/cache/apt"), |name| name.ends_with(".bin"));
    empty(&root.join("var/cache/apt/archives"), |name| {
        name.ends_with(".deb")
    });
    empty(&root.join("usr/share/locale"), |name| {
        name != "locale.alias"
    });
}

/// Removes the entries of `dir` whose names `remove` accepts.
fn empty(dir: &Path, remove: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !remove(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A hostile tree: absolute and escaping links, a setuid file owned by someone else, a
    /// fifo. The archive keeps each as it is and never reads through a link.
    #[test]
    fn the_root_filesystem_archive_keeps_links_as_links_and_owners_as_they_are() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let root = Scratch(
            std::env::temp_dir().join(format!("pyexec-tar-test.{}", uuid::Uuid::new_v4().simple())),
        );
        let dir = root.path();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        symlink("/etc/shadow", dir.join("etc/leak")).unwrap();
        symlink("../../../../etc", dir.join("etc/escape")).unwrap();
        std::fs::write(dir.join("etc/owned"), b"x").unwrap();
        std::os::unix::fs::chown(dir.join("etc/owned"), Some(4321), Some(4322)).unwrap();
        std::fs::set_permissions(
            dir.join("etc/owned"),
            std::fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        let fifo = std::ffi::CString::new(dir.join("etc/fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        let mut bytes = Vec::new();
        write_tar(dir, &mut bytes).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = HashMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let link = entry
                .link_name()
                .unwrap()
                .map(|link| link.to_string_lossy().into_owned());
            seen.insert(
                path,
                (
                    header.entry_type(),
                    link,
                    header.uid().unwrap(),
                    header.gid().unwrap(),
                    header.mode().unwrap(),
                    header.size().unwrap(),
                ),
            );
        }
        assert_eq!(seen["etc/leak"].0, tar::EntryType::Symlink);
        assert_eq!(seen["etc/leak"].1.as_deref(), Some("/etc/shadow"));
        assert_eq!(seen["etc/leak"].5, 0, "nothing of the host's file is read");
        assert_eq!(seen["etc/escape"].0, tar::EntryType::Symlink);
        assert_eq!(seen["etc/owned"].2, 4321);
        assert_eq!(seen["etc/owned"].3, 4322);
        assert_eq!(seen["etc/owned"].4 & 0o7777, 0o4750);
        assert_eq!(seen["etc/fifo"].0, tar::EntryType::Fifo);
        assert!(
            seen.keys()
                .all(|path| !path.starts_with('/') && !path.contains("..")),
            "{seen:?}"
        );
    }
}
