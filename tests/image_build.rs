//! `mcp-python-executor image build` against the engine `DOCKER_HOST` names (Docker in
//! `make test`, Podman in `make test-podman`): the recipe goes through the engine's API, the
//! offline path's root filesystem is imported the same way, and hostile trees (links out of the
//! tree, foreign owners) are imported as they are, never read through.
//!
//! The root filesystem these tests import is exported from `mcp-python-executor/rootfs:bookworm`,
//! which the offline `make image` leaves in the engine (podman-up.sh loads it into Podman).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use mcp_python_executor::base_image;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");
const ROOTFS_IMAGE: &str = "mcp-python-executor/rootfs:bookworm";

/// A folder removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("pyexec-{what}.{}", uuid()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Images removed when dropped (through the engine under test).
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let docker = common::docker();
                for name in names {
                    let _ = base_image::remove(&docker, &name).await;
                }
            });
        });
        let _ = done.join();
    }
}

/// `image`'s files as a tar, as the engine exports a container made from it (never started;
/// removed after). Export, not the archive endpoint: Podman's archive reports every owner as 0.
async fn exported(docker: &Docker, image: &str) -> Vec<u8> {
    let name = format!("pyexec-imgtest-{}", uuid());
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["/nothing".to_string()]),
        ..Default::default()
    };
    if let Err(error) = docker.create_container(Some(options), body).await {
        panic!(
            "no container from {image} (the offline `make image` leaves {ROOTFS_IMAGE}): {error}"
        );
    }
    let mut archive = Vec::new();
    let mut stream = docker.export_container(&name);
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.expect("export of the container"));
    }
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&name, Some(remove)).await.unwrap();
    archive
}

/// `image`'s files by path.
async fn files_of(docker: &Docker, image: &str) -> HashMap<String, tar::Header> {
    let archive = exported(docker, image).await;
    let mut found = HashMap::new();
    let mut reader = tar::Archive::new(archive.as_slice());
    for entry in reader.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        found.insert(
            path.trim_start_matches("./").to_string(),
            entry.header().clone(),
        );
    }
    found
}

/// A tree that would leak this host's files if the archive followed links: an absolute link to
/// a host file, a relative one climbing out of the tree, and a setuid file of a foreign owner.
/// After the import the image holds the links as links and the file as it was, and nothing of
/// the host.
#[tokio::test]
async fn a_hostile_root_filesystem_is_imported_as_it_is_and_never_read_through() {
    let docker = common::docker();
    let tree = Dir::new("hostile-rootfs");
    let root = &tree.0;
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    symlink("/etc/hostname", root.join("etc/leak")).unwrap();
    symlink("../../../../../etc/passwd", root.join("etc/climb")).unwrap();
    symlink("/etc", root.join("etc/host-etc")).unwrap();
    std::fs::write(root.join("usr/bin/owned"), b"mine").unwrap();
    std::os::unix::fs::chown(root.join("usr/bin/owned"), Some(4321), Some(4322)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("usr/bin/owned"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();

    let tag = format!("pxtest/hostile-rootfs:{}", uuid());
    let _cleanup = Images(vec![tag.clone()]);
    base_image::import_rootfs(&docker, root, &tag)
        .await
        .expect("the tree imports");

    let files = files_of(&docker, &tag).await;
    for (link, target) in [
        ("etc/leak", "/etc/hostname"),
        ("etc/climb", "../../../../../etc/passwd"),
        ("etc/host-etc", "/etc"),
    ] {
        let header = &files[link];
        assert_eq!(header.entry_type(), tar::EntryType::Symlink, "{link}");
        assert_eq!(
            header.link_name().unwrap().unwrap().to_string_lossy(),
            target,
            "{link}"
        );
        assert_eq!(header.size().unwrap(), 0, "{link}: no host content");
    }
    assert!(
        files.keys().all(|path| !path.starts_with("etc/host-etc/")),
        "the host's /etc was not walked: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    let owned = &files["usr/bin/owned"];
    assert_eq!((owned.uid().unwrap(), owned.gid().unwrap()), (4321, 4322));
    assert_eq!(owned.mode().unwrap() & 0o7777, 0o4755);
}

/// A folder that is no root filesystem is refused before the engine is asked.
#[tokio::test]
async fn a_folder_that_is_no_root_filesystem_is_refused_with_the_next_step() {
    let tree = Dir::new("not-rootfs");
    std::fs::write(tree.0.join("notes.txt"), b"hello").unwrap();
    let done = Command::new(BINARY)
        .args(["--image", "pxtest/never:1", "image", "build", "--rootfs"])
        .arg(&tree.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!done.status.success());
    assert!(
        stderr.contains("does not look like a root filesystem"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
}

/// Exports the offline root filesystem image into a folder, as debootstrap would have left it.
async fn export_rootfs(docker: &Docker, into: &Path) {
    let archive = exported(docker, ROOTFS_IMAGE).await;
    let mut reader = tar::Archive::new(archive.as_slice());
    reader.set_preserve_permissions(true);
    reader.set_preserve_ownerships(true);
    reader.set_unpack_xattrs(false);
    reader.unpack(into).expect("unpack the root filesystem");
}

fn build(image: &str, extra: &[&str]) -> (bool, String) {
    let done = Command::new(BINARY)
        .args(["--image", image, "image", "build"])
        .args(extra)
        .output()
        .unwrap();
    (
        done.status.success(),
        String::from_utf8_lossy(&done.stderr).into_owned(),
    )
}

/// The whole offline path through the engine's API: a root filesystem imported, the recipe
/// built on it, the image labelled with the recipe and able to run code; a second build sees it
/// is up to date.
#[tokio::test]
async fn image_build_imports_a_root_filesystem_builds_the_recipe_and_the_image_runs() {
    let docker = common::docker();
    let tree = Dir::new("rootfs");
    export_rootfs(&docker, &tree.0).await;
    let suite = format!("pxtest{}", uuid());
    let image = format!("pxtest/base:{}", uuid());
    let _cleanup = Images(vec![
        image.clone(),
        format!("mcp-python-executor/rootfs:{suite}"),
    ]);

    let rootfs = tree.0.to_str().unwrap();
    let (ok, said) = build(&image, &["--rootfs", rootfs, "--debian-suite", &suite]);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!(
            "built {image} on mcp-python-executor/rootfs:{suite}"
        )),
        "{said}"
    );
    assert_eq!(
        base_image::recipe_of(&docker, &image).await.as_deref(),
        Some(base_image::recipe().as_str())
    );

    let done = Command::new(BINARY)
        .args(["--image", &image, "exec", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"import os, sys; print(os.getuid() != 0, sys.prefix)")?;
            child.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(stdout.trim(), "True /opt/venv");

    let (ok, said) = build(&image, &["--offline", "--debian-suite", &suite]);
    assert!(ok, "{said}");
    assert!(said.contains("is up to date"), "{said}");
}
