//! The sandbox's base image, built through the engine's own API, so that it appears in
//! whichever engine `DOCKER_HOST` names (Docker, Podman, a remote daemon) and a user who has
//! only the binary needs one command: `mcp-python-executor image build` (`make image` calls it).
//!
//! Owns the recipe (images/Dockerfile, compiled into the binary and sent as a one-file tar
//! build context), its hash (the image's `mcp-python-executor.recipe` label, so an image built
//! from another recipe is rebuilt and an up-to-date one is left alone), the choice of base (the
//! registry's Python image when the engine has it or can pull it) and the offline path for
//! air-gapped hosts: a minimal Debian made by debootstrap (or a root filesystem the user
//! gives) is imported as an image through the same API, and the recipe is built on it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::labels::LABEL_RECIPE;

/// The recipe, as the repository's images/Dockerfile says it.
pub const DOCKERFILE: &str = include_str!("../images/Dockerfile");
/// The registry base used when the engine has it or can pull it.
pub const DEFAULT_BASE: &str = "python:3.12-slim";
/// How long pulling the registry base may take before the offline path is taken.
const PULL_FOR: Duration = Duration::from_secs(120);
/// What the imported root filesystem's image is told (as `docker import --change`).
const ROOTFS_CHANGES: [&str; 3] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "CMD [\"python3\"]",
];

/// The hash of the compiled-in recipe, as its image's label records it.
pub fn recipe() -> String {
    hex16(DOCKERFILE.as_bytes())
}

fn hex16(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What `image build` is asked to do.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The image to build (the server's `--image`).
    pub tag: String,
    /// The registry base tried first.
    pub base: String,
    /// Rebuild even when the image is up to date (and re-import the offline root filesystem).
    pub force: bool,
    /// Skip the registry base: build on an imported Debian root filesystem.
    pub offline: bool,
    /// A root filesystem (with python3 and python3-venv) to import instead of debootstrapping.
    pub rootfs: Option<PathBuf>,
    /// Debian suite, mirror and package cache for debootstrap.
    pub suite: String,
    pub mirror: String,
    pub cache: PathBuf,
}

impl BuildPlan {
    /// The tag the offline root filesystem is imported as.
    pub fn rootfs_tag(&self) -> String {
        format!("mcp-python-executor/rootfs:{}", self.suite)
    }
}

/// What `image build` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image was already built from this recipe; nothing was done.
    UpToDate,
    /// The image was built on this base.
    On(String),
}

/// Builds `plan.tag` from the compiled-in recipe in the engine `docker` reaches, unless it is
/// already built from it. `say` hears progress, one line at a time.
pub async fn build(
    docker: &Docker,
    plan: &BuildPlan,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Built> {
    let recipe = recipe();
    let built = recipe_of(docker, &plan.tag).await;
    if !plan.force && built.as_deref() == Some(recipe.as_str()) {
        return Ok(Built::UpToDate);
    }
    if let Some(other) = built.filter(|built| !plan.force && *built != recipe) {
        say(&format!(
            "{} was built from another recipe ({other}): rebuilding",
            plan.tag
        ));
    }
    let base = if !plan.offline && have_or_pull(docker, &plan.base, say).await {
        plan.base.clone()
    } else {
        if !plan.offline {
            say(&format!(
                "{} cannot be had (no registry?): using the offline path",
                plan.base
            ));
        }
        let rootfs_tag = plan.rootfs_tag();
        if plan.force || plan.rootfs.is_some() || !exists(docker, &rootfs_tag).await {
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
        rootfs_tag
    };
    say(&format!("building {} on {base}", plan.tag));
    build_recipe(docker, &plan.tag, &base, &recipe, say).await?;
    match recipe_of(docker, &plan.tag).await {
        Some(label) if label == recipe => Ok(Built::On(base)),
        other => bail!(
            "the engine built {} but its recipe label is {other:?}, not {recipe}",
            plan.tag
        ),
    }
}

/// The recipe label of an image, if the engine has the image.
pub async fn recipe_of(docker: &Docker, image: &str) -> Option<String> {
    let inspect = docker.inspect_image(image).await.ok()?;
    inspect.config?.labels?.remove(LABEL_RECIPE)
}

async fn exists(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

/// Whether the engine has `image`, pulling it if it can within [`PULL_FOR`].
async fn have_or_pull(docker: &Docker, image: &str, say: &(dyn Fn(&str) + Sync)) -> bool {
    if exists(docker, image).await {
        return true;
    }
    say(&format!("pulling {image}"));
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let pull = async {
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            if let Err(error) = item {
                tracing::debug!(%error, image, "pull failed");
                return false;
            }
        }
        true
    };
    tokio::time::timeout(PULL_FOR, pull).await.unwrap_or(false) && exists(docker, image).await
}

/// Sends the recipe as a one-file tar context and builds it on `base` as `tag`.
async fn build_recipe(
    docker: &Docker,
    tag: &str,
    base: &str,
    recipe: &str,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let mut context = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    context.append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())?;
    let context = context.into_inner()?;
    let args = HashMap::from([
        ("BASE".to_string(), base.to_string()),
        ("RECIPE".to_string(), recipe.to_string()),
    ]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .buildargs(&args)
        .rm(true)
        .forcerm(true)
        .build();
    let mut output = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = output.next().await {
        let info =
            item.map_err(|error| anyhow::anyhow!(build_failed(tag, &error.to_string(), &tail)))?;
        if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
            bail!(build_failed(tag, &error, &tail));
        }
        for line in info.stream.iter().flat_map(|text| text.lines()) {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            tracing::debug!(line, "build");
            if line.starts_with("Step ") || line.starts_with("STEP ") {
                say(&shorten(line, 100));
            }
            tail.push(line.to_string());
            if tail.len() > 12 {
                tail.remove(0);
            }
        }
    }
    Ok(())
}

/// `line` cut to `at` characters (a build step can be a screenful).
fn shorten(line: &str, at: usize) -> String {
    let squeezed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    match squeezed.char_indices().nth(at) {
        Some((cut, _)) => format!("{}…", &squeezed[..cut]),
        None => squeezed,
    }
}

fn build_failed(tag: &str, error: &str, tail: &[String]) -> String {
    let mut text = format!("the engine could not build {tag}: {}", error.trim());
    if !tail.is_empty() {
        text.push_str(&format!("\nits last output:\n  {}", tail.join("\n  ")));
    }
    text.push_str("\nhint: RUST_LOG=debug shows the whole build; `doctor` checks the engine");
    text
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

/// Removes an image the engine has, for tests and resets; a missing image is not an error.
pub async fn remove(docker: &Docker, image: &str) -> anyhow::Result<()> {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    match docker.remove_image(image, Some(options), None).await {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot remove {image}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_hash_is_what_sha256sum_says_of_the_dockerfile() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/Dockerfile");
        let out = std::process::Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap();
        let expected = String::from_utf8(out.stdout).unwrap()[..16].to_string();
        assert_eq!(recipe(), expected);
    }

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
