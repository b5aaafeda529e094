//! `image build`: builds the recipe on the registry's Python image when the engine has it or
//! can pull it, and otherwise on the offline root filesystem; an image already built from
//! this recipe is left alone.

use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures::StreamExt;

use super::plan::{BuildPlan, Built};
use super::recipe::{build_recipe, recipe, recipe_of};
use super::rootfs::offline_base;

/// How long pulling the registry base may take before the offline path is taken.
const PULL_FOR: Duration = Duration::from_secs(120);

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
        offline_base(docker, plan, say).await?
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
