//! The recipe: images/Dockerfile compiled into the binary, its hash (the image's
//! `mcp-python-executor.recipe` label, so an image built from another recipe is rebuilt and an
//! up-to-date one is left alone), and building it on a base through the engine's API, sent as
//! a one-file tar build context.

use std::collections::HashMap;

use anyhow::bail;
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::labels::LABEL_RECIPE;

/// The recipe, as the repository's images/Dockerfile says it.
pub const DOCKERFILE: &str = include_str!("../../images/Dockerfile");

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

/// The recipe label of an image, if the engine has the image.
pub async fn recipe_of(docker: &Docker, image: &str) -> Option<String> {
    let inspect = docker.inspect_image(image).await.ok()?;
    inspect.config?.labels?.remove(LABEL_RECIPE)
}
/// Sends the recipe as a one-file tar context and builds it on `base` as `tag`.
pub async fn build_recipe(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
}
