//! `mcp-python-executor doctor`: what this host gives the sandbox, checked and said in one
//! screen, each finding with the next step when something is wrong.
//!
//! [`gather`] asks Docker (version, info, the images and containers of ours); [`assess`] is
//! pure: it turns those facts into findings, so every verdict is unit-tested without a daemon.
//! Each concern is one check (engine and limits, runtime, host security, base image,
//! environment, egress with `--allow-host`, leftovers), printed in that order by [`render`].
//! The egress check is the one that runs a container (`egress.rs`).

mod egress;
mod finding;

pub use egress::Probe;
use finding::finding;
pub use finding::{Finding, Verdict};

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::ListImagesOptions;

use crate::engine::docker_host;
use crate::labels::{BASE_LAYOUT, LABEL_DEPTH, LABEL_ENV, LABEL_LAYOUT, LABEL_RECIPE};
use crate::sandbox::{deadline, labelled_containers};
use crate::settings::{EnvironmentConfig, SandboxConfig};

/// What `gather` learned; `None` where Docker could not say.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub host: String,
    /// Why Docker could not be reached, when it could not.
    pub unreachable: Option<String>,
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub default_runtime: Option<String>,
    pub runtimes: Vec<String>,
    pub security_options: Vec<String>,
    pub cgroup_version: Option<String>,
    /// Docker or Podman, and whether it runs rootless.
    pub engine: Option<crate::engine::Engine>,
    /// The configured runtime (`--runtime`), if any.
    pub runtime: Option<String>,
    pub image: String,
    /// The base image's layout label, when the image exists (empty when unlabelled).
    pub image_layout: Option<String>,
    /// The base image's recipe label (the hash of the Dockerfile it was built from), if any.
    pub image_recipe: Option<String>,
    pub env_tag: String,
    /// Depth and size (bytes) of the environment image, when the tag exists.
    pub env: Option<(u32, u64)>,
    /// Containers of ours: all, and those past their deadline.
    pub containers: (usize, usize),
    /// Images of ours no tag and no child needs any more.
    pub dangling_images: usize,
    /// The allowlist (`--allow-host`), and whether a container reached its proxy; `None`
    /// without one.
    pub allowed_hosts: Vec<String>,
    pub egress: Option<egress::Probe>,
}

/// Asks Docker everything the report needs; never fails (what it cannot learn is `None`).
pub async fn gather(sandbox: &SandboxConfig, environment: &EnvironmentConfig) -> Facts {
    let mut facts = Facts {
        host: docker_host(),
        runtime: sandbox.runtime.clone(),
        image: sandbox.image.clone(),
        env_tag: environment.env_tag.clone(),
        ..Facts::default()
    };
    // Connected without the refusal a serving sandbox makes, so the report can say why.
    let docker = match crate::engine::connect().await {
        Ok(docker) => docker,
        Err(error) => {
            facts.unreachable = Some(error.to_string());
            return facts;
        }
    };
    let docker = &docker;
    let version = docker.version().await.ok();
    let info = docker.info().await.ok();
    facts.engine = Some(crate::engine::Engine::from_reports(
        version.as_ref(),
        info.as_ref(),
    ));
    if let Some(version) = version {
        facts.version = version.version;
        facts.api_version = version.api_version;
    }
    if let Some(info) = info {
        facts.default_runtime = info.default_runtime;
        facts.runtimes = info.runtimes.unwrap_or_default().into_keys().collect();
        facts.runtimes.sort();
        facts.security_options = info.security_options.unwrap_or_default();
        facts.cgroup_version = info.cgroup_version.map(|v| v.to_string());
    }
    if let Ok(image) = docker.inspect_image(&facts.image).await {
        let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
        facts.image_layout = Some(labels.get(LABEL_LAYOUT).cloned().unwrap_or_default());
        facts.image_recipe = labels.get(LABEL_RECIPE).cloned();
    }
    if let Ok(env) = docker.inspect_image(&facts.env_tag).await {
        let depth = env
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_DEPTH).and_then(|d| d.parse().ok()))
            .unwrap_or(0);
        facts.env = Some((depth, env.size.unwrap_or(0).max(0) as u64));
    }
    facts.containers = ours(docker).await;
    facts.dangling_images = dangling(docker).await;
    if let Some(policy) = &sandbox.egress {
        facts.allowed_hosts = egress::allowed(policy);
        facts.egress = Some(match facts.image_layout {
            Some(_) => egress::probe(sandbox).await,
            None => egress::Probe::Failed(format!("no image {} to try it in", facts.image)),
        });
    }
    facts
}

async fn ours(docker: &Docker) -> (usize, usize) {
    let Ok(listed) = labelled_containers(docker).await else {
        return (0, 0);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expired = listed.iter().filter(|c| deadline(c) < now).count();
    (listed.len(), expired)
}

async fn dangling(docker: &Docker) -> usize {
    let options = ListImagesOptions {
        all: true,
        filters: Some(HashMap::from([
            ("label".to_string(), vec![LABEL_ENV.to_string()]),
            ("dangling".to_string(), vec!["true".to_string()]),
        ])),
        ..Default::default()
    };
    docker
        .list_images(Some(options))
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

/// The findings, in the order they are printed. Pure.
pub fn assess(facts: &Facts) -> Vec<Finding> {
    if let Some(reason) = &facts.unreachable {
        return vec![unreachable(reason)];
    }
    let mut found = engine(facts);
    found.push(runtime(facts));
    found.extend(host_security(facts));
    found.push(image(facts));
    found.push(environment(facts));
    found.extend(
        facts
            .egress
            .as_ref()
            .map(|probe| egress::assess(probe, &facts.allowed_hosts)),
    );
    found.push(leftovers(facts));
    found
}

fn unknown() -> String {
    "unknown".to_string()
}

/// The one finding when Docker cannot be reached: the error's first line, and its own hint
/// as the next step when it has one (ssh://, TLS, rootless on cgroup v1).
fn unreachable(reason: &str) -> Finding {
    let said = crate::hint::Hinted::parse(reason);
    let first = said.reason.lines().next().unwrap_or_default().to_string();
    let next = said.hints.first().map_or(
        "start Docker (e.g. `systemctl start docker`), or set DOCKER_HOST to the engine you use (Podman: unix:///run/podman/podman.sock, or unix://$XDG_RUNTIME_DIR/podman/podman.sock rootless)",
        String::as_str,
    );
    finding(Verdict::Fail, "docker", first, Some(next))
}

/// The engine (kind, version, API, host), and a failure when it cannot enforce the limits.
fn engine(facts: &Facts) -> Vec<Finding> {
    let mut found = Vec::new();
    let engine = facts
        .engine
        .clone()
        .unwrap_or_else(|| crate::engine::Engine {
            version: facts.version.clone().unwrap_or_else(unknown),
            ..Default::default()
        });
    found.push(finding(
        Verdict::Ok,
        "docker",
        format!(
            "{} (API {}) at {}",
            engine.describe(),
            facts.api_version.clone().unwrap_or_else(unknown),
            facts.host
        ),
        None,
    ));
    if let Some(reason) = engine.cannot_limit() {
        found.push(finding(
            Verdict::Fail,
            "limits",
            reason,
            Some(
                "run a rootful engine, or rootless on cgroup v2 with the memory, pids and cpu \
                 controllers delegated to the user (README, Podman)",
            ),
        ));
    }
    found
}

/// The runtime in use, whether the configured one is registered, and whether gVisor is.
fn runtime(facts: &Facts) -> Finding {
    let gvisor = facts.runtimes.iter().any(|r| r == "runsc");
    let in_use = facts
        .runtime
        .clone()
        .or_else(|| {
            facts
                .default_runtime
                .clone()
                .map(|d| format!("{d} (the daemon's default)"))
        })
        .unwrap_or_else(unknown);
    match &facts.runtime {
        Some(runtime) if !facts.runtimes.contains(runtime) => finding(
            Verdict::Fail,
            "runtime",
            format!("--runtime {runtime} is not registered with this daemon (it has: {})", facts.runtimes.join(", ")),
            Some("register it in /etc/docker/daemon.json and reload dockerd (see SECURITY.md, Enabling gVisor)"),
        ),
        _ => finding(
            if gvisor || facts.runtime.is_some() { Verdict::Ok } else { Verdict::Warn },
            "runtime",
            format!("{in_use}; gVisor (runsc) registered: {}", if gvisor { "yes" } else { "no" }),
            (!gvisor).then_some("for kernel-level isolation install runsc and register it (SECURITY.md, Enabling gVisor), then use --runtime runsc"),
        ),
    }
}

/// What the kernel gives the daemon: seccomp, AppArmor and the cgroup version.
fn host_security(facts: &Facts) -> [Finding; 3] {
    let seccomp = facts.security_options.iter().any(|o| o.contains("seccomp"));
    let apparmor = facts
        .security_options
        .iter()
        .any(|o| o.contains("apparmor"));
    [
        finding(
            if seccomp { Verdict::Ok } else { Verdict::Warn },
            "seccomp",
            format!(
                "daemon reports {}",
                if facts.security_options.is_empty() {
                    "no security options".to_string()
                } else {
                    facts.security_options.join(", ")
                }
            ),
            (!seccomp).then_some("use a Docker built with seccomp and do not run it with --seccomp-profile=unconfined: without it every system call is open to the code"),
        ),
        finding(
            Verdict::Ok,
            "apparmor",
            if apparmor {
                "reported by the daemon"
            } else {
                "not reported (fine where the host has no AppArmor)"
            }
            .to_string(),
            None,
        ),
        finding(
            Verdict::Ok,
            "cgroup",
            format!(
                "version {}",
                facts.cgroup_version.clone().unwrap_or_else(unknown)
            ),
            None,
        ),
    ]
}

/// The base image: missing, of an older layout (no installs), from another recipe, or fine.
fn image(facts: &Facts) -> Finding {
    match facts.image_layout.as_deref() {
        None => finding(
            Verdict::Fail,
            "image",
            format!("{} not found", facts.image),
            Some("build it with `mcp-python-executor image build` (or `make image`)"),
        ),
        Some(BASE_LAYOUT) => match facts.image_recipe.as_deref() {
            Some(recipe) if recipe != crate::base_image::recipe() => finding(
                Verdict::Warn,
                "image",
                format!(
                    "{} was built from another recipe ({recipe}) than this binary's ({})",
                    facts.image,
                    crate::base_image::recipe()
                ),
                Some("rebuild it with `mcp-python-executor image build` (or `make image`)"),
            ),
            _ => finding(
                Verdict::Ok,
                "image",
                format!("{} present", facts.image),
                None,
            ),
        },
        Some(_) => finding(
            Verdict::Warn,
            "image",
            format!(
                "{} predates unprivileged installs: executions work, installs are refused",
                facts.image
            ),
            Some("rebuild it with `mcp-python-executor image build` (or `make image`)"),
        ),
    }
}

/// The package environment: not created yet, or its depth and size.
fn environment(facts: &Facts) -> Finding {
    match facts.env {
        None => finding(
            Verdict::Ok,
            "environment",
            format!("{} not created yet: no packages installed", facts.env_tag),
            None,
        ),
        Some((depth, size)) => finding(
            Verdict::Ok,
            "environment",
            format!(
                "{}: {depth} layer(s) above the base, {} MiB in all",
                facts.env_tag,
                size >> 20
            ),
            None,
        ),
    }
}

/// Containers and images of ours left behind; a warning when some are past their deadline.
fn leftovers(facts: &Facts) -> Finding {
    let (containers, expired) = facts.containers;
    finding(
        if expired > 0 {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        "leftovers",
        format!(
            "{containers} container(s) of ours ({expired} past their deadline), {} image(s) no longer needed",
            facts.dangling_images
        ),
        (expired > 0 || facts.dangling_images > 0).then_some(
            "a running server reaps expired containers within 10 s; to clear by hand: \
             docker rm -f $(docker ps -aq --filter label=mcp-python-executor) and \
             docker image prune --filter label=mcp-python-executor.env",
        ),
    )
}

/// The findings as text, one line each and the next step below a line that needs one.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let verdict = match finding.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!(
            "{verdict}  {:<12} {}\n",
            finding.check, finding.detail
        ));
        if let Some(next) = &finding.next {
            out.push_str(&format!("      {:<12} next: {next}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            host: "unix:///var/run/docker.sock".into(),
            version: Some("20.10.24".into()),
            api_version: Some("1.41".into()),
            default_runtime: Some("runc".into()),
            runtimes: vec!["runc".into(), "runsc".into()],
            security_options: vec!["name=seccomp,profile=default".into()],
            cgroup_version: Some("1".into()),
            image: "img".into(),
            image_layout: Some("2".into()),
            env_tag: "env:current".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn egress_is_checked_only_with_an_allowlist_and_a_failure_names_the_fix() {
        assert!(assess(&healthy()).iter().all(|f| f.check != "egress"));
        let mut facts = healthy();
        facts.allowed_hosts = vec!["api.github.com".into()];
        facts.egress = Some(egress::Probe::Answered);
        let findings = assess(&facts);
        assert_eq!(verdict_of(&findings, "egress"), Verdict::Ok);
        facts.egress = Some(egress::Probe::Failed(
            "the runtime `runsc` is gVisor without --host-uds=open\nhint: register runsc-egress"
                .into(),
        ));
        let findings = assess(&facts);
        let egress = findings.iter().find(|f| f.check == "egress").unwrap();
        assert_eq!(egress.verdict, Verdict::Fail);
        assert!(egress.detail.contains("api.github.com"), "{egress:?}");
        assert_eq!(egress.next.as_deref(), Some("register runsc-egress"));
    }

    fn verdict_of(findings: &[Finding], check: &str) -> Verdict {
        findings.iter().find(|f| f.check == check).unwrap().verdict
    }

    #[test]
    fn a_healthy_host_is_all_ok() {
        let findings = assess(&healthy());
        assert!(
            findings.iter().all(|f| f.verdict == Verdict::Ok),
            "{findings:?}"
        );
        assert!(
            render(&findings).contains("Docker 20.10.24, rootful (API 1.41)"),
            "{}",
            render(&findings)
        );
    }

    #[test]
    fn a_rootless_engine_on_cgroup_v1_fails_and_a_rootful_one_passes() {
        let mut facts = healthy();
        facts.engine = Some(crate::engine::Engine {
            kind: crate::engine::EngineKind::Podman,
            version: "4.3.1".into(),
            rootless: true,
            cgroup: Some("1".into()),
        });
        let findings = assess(&facts);
        assert_eq!(verdict_of(&findings, "limits"), Verdict::Fail);
        let limits = findings.iter().find(|f| f.check == "limits").unwrap();
        assert!(limits.detail.contains("ignores memory"), "{limits:?}");
        assert!(limits.next.as_deref().unwrap().contains("cgroup v2"));
        facts.engine.as_mut().unwrap().rootless = false;
        assert!(!assess(&facts).iter().any(|f| f.check == "limits"));
    }

    #[test]
    fn an_unreachable_daemon_is_one_failure_with_the_next_step() {
        let facts = Facts {
            unreachable: Some(
                crate::engine::DockerError::Unreachable {
                    host: "tcp://x:1".into(),
                    reason: "connection refused".into(),
                    source: None,
                }
                .to_string(),
            ),
            ..Facts::default()
        };
        let findings = assess(&facts);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].verdict, Verdict::Fail);
        assert!(findings[0].next.as_deref().unwrap().contains("DOCKER_HOST"));
    }

    #[test]
    fn missing_seccomp_image_or_runtime_say_what_to_do() {
        let mut facts = healthy();
        facts.security_options.clear();
        facts.image_layout = None;
        facts.runtime = Some("kata".into());
        let findings = assess(&facts);
        assert_eq!(verdict_of(&findings, "seccomp"), Verdict::Warn);
        assert_eq!(verdict_of(&findings, "image"), Verdict::Fail);
        assert_eq!(verdict_of(&findings, "runtime"), Verdict::Fail);
        let text = render(&findings);
        assert!(text.contains("make image"), "{text}");
        assert!(text.contains("not registered"), "{text}");
    }

    #[test]
    fn an_image_from_another_recipe_is_a_warning_to_rebuild_and_an_unlabelled_one_is_fine() {
        let mut facts = healthy();
        facts.image_recipe = Some(crate::base_image::recipe());
        assert_eq!(verdict_of(&assess(&facts), "image"), Verdict::Ok);
        facts.image_recipe = Some("0123456789abcdef".into());
        let findings = assess(&facts);
        assert_eq!(verdict_of(&findings, "image"), Verdict::Warn);
        assert!(render(&findings).contains("image build"));
        facts.image_recipe = None;
        assert_eq!(verdict_of(&assess(&facts), "image"), Verdict::Ok);
    }

    #[test]
    fn leftovers_past_their_deadline_are_a_warning() {
        let mut facts = healthy();
        facts.containers = (3, 1);
        assert_eq!(verdict_of(&assess(&facts), "leftovers"), Verdict::Warn);
    }
}
