//! The environment's pure decisions, unit-tested without an engine: what the current state
//! is (from the environment image's labels), what an install will do (what is present, what
//! is missing, a new layer or a rebuild on the base past `--max-layers`), which layers a new
//! head supersedes, and which distributions an install changed.
//!
//! Everything here takes values and returns values; `environment.rs` and `collect.rs` ask
//! the engine and act on the answers.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::labels::{LABEL_BASE, LABEL_DEPTH, LABEL_PACKAGES, LABEL_REQUESTED};
use crate::packages::{PackageSpec, SpecError, parse_spec_list};

/// What is installed in the current environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvState {
    /// The image executions use: the environment image's id, or the base image.
    pub image: String,
    /// Id of the base image the environment was built on.
    pub base_id: String,
    /// Installed distributions by normalized name: (display name, version).
    pub packages: BTreeMap<String, (String, String)>,
    /// Specs users asked for, in the order they were first installed.
    pub requested: Vec<String>,
    /// Install layers above the base.
    pub depth: u32,
}

/// What an install will do, decided from the current state alone.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallPlan {
    /// Requested specs the environment already satisfies, as `name==version`.
    pub already_present: Vec<String>,
    /// Every spec requested so far, this call's included, as the new layer records it.
    pub requested: Vec<String>,
    /// The container work, if any.
    pub action: Option<PlanAction>,
}

/// The container work of an install.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanAction {
    /// The image pip installs into: the current one, or the base for a rebuild.
    pub parent: String,
    /// What pip is given.
    pub specs: Vec<PackageSpec>,
    /// The new layer's depth above the base.
    pub depth: u32,
    /// True when the chain is at `--max-layers` and everything is installed again on the base.
    pub rebuild: bool,
}

/// Decides an install: what is present, what is missing, and whether the missing specs go on
/// a new layer or the whole requested list is installed again on the base in one layer.
pub fn plan(
    state: &EnvState,
    specs: &[PackageSpec],
    max_layers: u32,
) -> Result<InstallPlan, SpecError> {
    let (present, missing): (Vec<&PackageSpec>, Vec<&PackageSpec>) =
        specs.iter().partition(|spec| {
            state
                .packages
                .get(&spec.name)
                .is_some_and(|(_, version)| spec.is_satisfied_by(version))
        });
    let already_present = present
        .iter()
        .map(|s| {
            let (name, version) = &state.packages[&s.name];
            format!("{name}=={version}")
        })
        .collect();
    let mut requested = state.requested.clone();
    if missing.is_empty() {
        return Ok(InstallPlan {
            already_present,
            requested,
            action: None,
        });
    }
    for spec in &missing {
        requested
            .retain(|r| crate::packages::parse_spec(r).map(|p| p.name) != Ok(spec.name.clone()));
        requested.push(spec.requirement.clone());
    }
    let action = if state.depth >= max_layers {
        PlanAction {
            parent: state.base_id.clone(),
            // The accumulated list may be longer than one call's limit: it is not one call.
            specs: parse_spec_list(&requested)?,
            depth: 1,
            rebuild: true,
        }
    } else {
        PlanAction {
            parent: state.image.clone(),
            specs: missing.into_iter().cloned().collect(),
            depth: state.depth + 1,
            rebuild: false,
        }
    };
    Ok(InstallPlan {
        already_present,
        requested,
        action: Some(action),
    })
}

/// The state an environment image's labels record; `None` when it was built on another base
/// than `base_id` (then the base with nothing installed is the state). `image` is the
/// environment image's id.
pub fn recorded_state(
    image: String,
    base_id: &str,
    labels: &HashMap<String, String>,
) -> Option<EnvState> {
    if labels.get(LABEL_BASE).map(String::as_str) != Some(base_id) {
        return None;
    }
    Some(EnvState {
        image,
        base_id: base_id.to_string(),
        packages: parse_packages_label(labels),
        requested: labels
            .get(LABEL_REQUESTED)
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default(),
        depth: labels
            .get(LABEL_DEPTH)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    })
}

/// The layers not in the chain below `head`, children before parents. Pure.
pub fn superseded(layers: &[(String, Option<String>, u32)], head: Option<&str>) -> Vec<String> {
    let parents: HashMap<&str, &str> = layers
        .iter()
        .filter_map(|(id, parent, _)| Some((id.as_str(), parent.as_deref()?)))
        .collect();
    let mut chain = HashSet::new();
    let mut next = head;
    while let Some(id) = next {
        if !chain.insert(id) {
            break;
        }
        next = parents.get(id).copied();
    }
    let mut gone: Vec<&(String, Option<String>, u32)> = layers
        .iter()
        .filter(|(id, _, _)| !chain.contains(id.as_str()))
        .collect();
    gone.sort_by_key(|layer| std::cmp::Reverse(layer.2));
    gone.into_iter().map(|(id, _, _)| id.clone()).collect()
}

/// Distributions that are new or changed between two package maps, as `name==version`.
pub fn changed_packages(
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(key, (_, version))| before.get(*key).map(|(_, v)| v) != Some(version))
        .map(|(_, (name, version))| format!("{name}=={version}"))
        .collect()
}

fn parse_packages_label(labels: &HashMap<String, String>) -> BTreeMap<String, (String, String)> {
    let raw: BTreeMap<String, String> = labels
        .get(LABEL_PACKAGES)
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    normalize_package_map(raw)
}

/// Keys a `{name: version}` map by PEP 503-normalized name, keeping the display name.
pub fn normalize_package_map(raw: BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
    raw.into_iter()
        .map(|(name, version)| (normalize_name(&name), (name, version)))
        .collect()
}

/// PEP 503 name normalization: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::parse_specs;

    fn state(packages: &[(&str, &str)], requested: &[&str], depth: u32) -> EnvState {
        EnvState {
            image: "sha256:current".into(),
            base_id: "sha256:base".into(),
            packages: normalize_package_map(
                packages
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ),
            requested: requested.iter().map(|r| r.to_string()).collect(),
            depth,
        }
    }

    #[test]
    fn a_plan_with_everything_present_does_nothing() {
        let state = state(&[("six", "1.16.0")], &["six"], 1);
        let plan = plan(&state, &parse_specs(&["Six>=1"]).unwrap(), 20).unwrap();
        assert_eq!(plan.already_present, ["six==1.16.0"]);
        assert_eq!(plan.action, None);
    }

    #[test]
    fn missing_specs_go_on_a_new_layer_and_replace_older_requests_of_the_same_name() {
        let state = state(&[("six", "1.15.0")], &["six==1.15.0", "idna"], 1);
        let specs = parse_specs(&["six==1.16.0", "attrs"]).unwrap();
        let plan = plan(&state, &specs, 20).unwrap();
        assert!(plan.already_present.is_empty());
        assert_eq!(plan.requested, ["idna", "attrs", "six==1.16.0"]);
        let action = plan.action.unwrap();
        assert_eq!(action.parent, "sha256:current");
        assert_eq!(action.depth, 2);
        assert!(!action.rebuild);
        assert_eq!(action.specs.len(), 2);
    }

    #[test]
    fn at_the_layer_limit_everything_requested_is_installed_again_on_the_base() {
        // More specs than one call may give have accumulated: a rebuild still works.
        let requested: Vec<String> = (0..80).map(|i| format!("pkg{i}")).collect();
        let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
        let state = state(&[], &requested, 3);
        let plan = plan(&state, &parse_specs(&["extra"]).unwrap(), 3).unwrap();
        let action = plan.action.unwrap();
        assert!(action.rebuild);
        assert_eq!(action.parent, "sha256:base");
        assert_eq!(action.depth, 1);
        assert_eq!(action.specs.len(), 81);
    }

    #[test]
    fn superseded_layers_are_those_outside_the_chain_children_first() {
        let layer =
            |id: &str, parent: &str, depth| (id.to_string(), Some(parent.to_string()), depth);
        let layers = [
            layer("a1", "base", 1),
            layer("a2", "a1", 2),
            layer("a3", "a2", 3),
            layer("b1", "base", 1),
            layer("b2", "b1", 2),
        ];
        assert_eq!(superseded(&layers, Some("b2")), ["a3", "a2", "a1"]);
        assert_eq!(superseded(&layers, Some("a2")), ["a3", "b2", "b1"]);
        // No tag (a reset): every layer goes.
        assert_eq!(superseded(&layers, None).len(), 5);
    }

    #[test]
    fn the_state_is_read_from_labels_unless_built_on_another_base() {
        let labels = HashMap::from([
            (LABEL_BASE.to_string(), "sha256:base".to_string()),
            (
                LABEL_PACKAGES.to_string(),
                r#"{"Six": "1.16.0"}"#.to_string(),
            ),
            (LABEL_REQUESTED.to_string(), r#"["six"]"#.to_string()),
            (LABEL_DEPTH.to_string(), "2".to_string()),
        ]);
        let state = recorded_state("sha256:env".into(), "sha256:base", &labels).unwrap();
        assert_eq!(state.image, "sha256:env");
        assert_eq!(
            state.packages["six"],
            ("Six".to_string(), "1.16.0".to_string())
        );
        assert_eq!(state.requested, ["six"]);
        assert_eq!(state.depth, 2);
        assert_eq!(
            recorded_state("sha256:env".into(), "sha256:other", &labels),
            None
        );
    }

    #[test]
    fn names_are_normalized_like_pep_503() {
        assert_eq!(normalize_name("Zope.Interface"), "zope-interface");
        assert_eq!(normalize_name("scikit__learn"), "scikit-learn");
        assert_eq!(normalize_name("six"), "six");
    }

    #[test]
    fn changes_list_new_and_upgraded_distributions_only() {
        let before = normalize_package_map(BTreeMap::from([
            ("six".to_string(), "1.15.0".to_string()),
            ("idna".to_string(), "3.7".to_string()),
        ]));
        let after = normalize_package_map(BTreeMap::from([
            ("six".to_string(), "1.16.0".to_string()),
            ("idna".to_string(), "3.7".to_string()),
            ("Requests".to_string(), "2.32.3".to_string()),
        ]));
        assert_eq!(
            changed_packages(&before, &after),
            ["Requests==2.32.3", "six==1.16.0"]
        );
    }
}
