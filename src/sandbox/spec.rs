//! The hardened create bodies: one pure function per kind of container, from the settings to
//! Docker's create body, so every hardening flag is visible in one place and checked by unit
//! tests. [`container_spec`] for an execution (a call's own container or a warm one),
//! [`session_spec`] for a session (an execution with a lifetime), [`install_spec`] for a pip
//! install; the shared [`hardened_host_config`], and the uids calls run as ([`CALL_UIDS`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, ResourcesUlimits,
};

use super::protocol::{RUNNER, SESSION_MODE};
use crate::labels::{LABEL_DEADLINE, LABEL_INSTALL, LABEL_OWNER, LABEL_SESSION, LABEL_WARM};
use crate::settings::SandboxConfig;
/// The uids calls run as: each container draws its own from this range, so no kernel
/// per-user limit or counter (inotify instances, user watches, RLIMIT_NPROC, keyrings) is
/// shared between calls. Above the ranges hosts give users, services and subordinate ids, and
/// below 2^31 so no tool mistakes it for a negative number; nothing on the host or in the
/// image is owned by one. A program's uid is even; its supervisor runs as the odd uid just
/// above it ([`supervisor_uid`]), so no program ever shares a uid with any supervisor.
pub const CALL_UIDS: std::ops::Range<u32> = 1_500_000_000..2_000_000_000;
/// The capabilities an execution container starts with, held by its runner (root for its
/// first milliseconds, before anything of the call exists) only to give the program and
/// itself their own uids: SETUID and SETGID for that, SETPCAP to empty the bounding sets.
/// The program keeps none; the supervisor keeps only KILL, to interrupt and kill the
/// program's process, whose uid is not its own (`runner.py`, `_become`).
pub const RUNNER_CAPS: [&str; 4] = ["SETUID", "SETGID", "SETPCAP", "KILL"];
/// The unprivileged user pip runs as in install containers: it owns `/opt/venv` and nothing
/// else (images/Dockerfile). Never root.
pub const INSTALL_USER: &str = "10002:10002";
/// The interpreter every container runs, by absolute path: the venv's link to the image's
/// Python (executions run it as their init; installs under Docker's init and `timeout`).
/// Install layers may never change it (`image::changes`), so no package's script named
/// `python3` is ever run in its place.
pub const VENV_PYTHON: &str = "/opt/venv/bin/python3";
/// The install container's in-container deadline, by absolute path: PATH starts with
/// `/opt/venv/bin`, where a package may install a script called `timeout`. (Executions keep
/// their deadline in the runner itself.)
pub const TIMEOUT: &str = "/usr/bin/timeout";
/// Largest file pip may write in an install container (wheels and their contents can be big).
const INSTALL_FSIZE: i64 = 4 << 30;
/// Extra seconds the in-container deadline and the reaper give beyond the call's timeout.
const GRACE: Duration = Duration::from_secs(5);
/// Where `--workspace` appears in executions.
pub const WORKSPACE: &str = "/workspace";
/// Matplotlib's config and font cache: /tmp is the only writable place.
const MPL_CONFIG_DIR: &str = "/tmp/.config/matplotlib";

/// Docker's create body for one execution of `image`: hardened, limited, labelled.
///
/// `idle` is how long the container may wait, started, for its payload: zero for a call's own
/// container, the pool's max age for a warm one. Both deadlines grow by it, so a warm container
/// taken before its max age still has the whole timeout ahead of it.
pub fn container_spec(
    config: &SandboxConfig,
    image: &str,
    instance: &str,
    now: SystemTime,
    idle: Duration,
    uid: u32,
) -> ContainerCreateBody {
    let limits = &config.limits;
    // The in-container deadline: an orphan (server killed) ends by itself.
    let inner_deadline = (idle + limits.timeout + GRACE).as_secs();
    // CPU seconds a process may use: enough for every allowed core over the whole timeout
    // (waiting for the payload costs none).
    let cpu_seconds = (limits.timeout + GRACE).as_secs() as i64
        * ((limits.nano_cpus + 999_999_999) / 1_000_000_000);
    let mut host_config = hardened_host_config(config);
    host_config.cap_add = Some(RUNNER_CAPS.map(String::from).to_vec());
    host_config.readonly_rootfs = Some(true);
    host_config.network_mode = Some(config.network.clone());
    // The runner is PID 1: it reaps orphans and forwards nothing; see runner.py.
    host_config.init = Some(false);
    if let Some(ulimits) = host_config.ulimits.as_mut() {
        ulimits.push(ulimit("cpu", cpu_seconds));
    }
    // The user's data, read-only, when they chose to share a folder (never in installs).
    if let Some(workspace) = &config.workspace {
        host_config.mounts = Some(workspace_mount(workspace));
    }
    ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(execution_env(config)),
        // Root only until the runner has given the program `uid` (and as its group: nothing
        // else in the container or on the host has it) and itself the next uid, with no
        // capability left but KILL: under every runtime, gVisor included, the program then
        // cannot open the supervisor's descriptors nor signal it.
        user: Some("0:0".to_string()),
        // The runner is the container's init and keeps the deadline itself: no process the
        // program could ptrace (Docker's init, `timeout`) stands between it and the status.
        // `-s -S -P`: nothing of the environment's packages (no `.pth`, no site-packages) and
        // no folder the program can write (`-c` would put the working directory, /tmp, first
        // on sys.path) reaches the supervisor's imports; the child runs `site` itself.
        entrypoint: Some(runner_entrypoint(inner_deadline, uid)),
        cmd: Some(Vec::new()),
        labels: Some({
            let mut labels =
                ownership_labels(instance, now + idle + limits.timeout + GRACE + GRACE);
            if !idle.is_zero() {
                labels.insert(LABEL_WARM.to_string(), "1".to_string());
            }
            labels
        }),
        host_config: Some(host_config),
        ..attached_body()
    }
}

/// A read-only bind of `source` at `target`, not recursive, its mounts kept private.
pub(super) fn read_only_bind(source: &Path, target: &str) -> Mount {
    Mount {
        target: Some(target.to_string()),
        source: Some(source.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The read-only bind of `--workspace` at [`WORKSPACE`].
fn workspace_mount(workspace: &Path) -> Vec<Mount> {
    vec![read_only_bind(workspace, WORKSPACE)]
}

/// An execution's environment: the shared minimal one, and matplotlib's.
fn execution_env(config: &SandboxConfig) -> Vec<String> {
    let mut env = attached_body().env.unwrap_or_default();
    // Matplotlib draws headless; figures come back when files may (see runner.py).
    let backend = if config.outputs.max_files_bytes > 0 {
        "module://pyexec_figures"
    } else {
        "Agg"
    };
    env.push(format!("MPLBACKEND={backend}"));
    env.push(format!("MPLCONFIGDIR={MPL_CONFIG_DIR}"));
    env
}

/// The runner, started with its deadline (`inner_deadline` seconds), the program's uid and
/// the supervisor's.
fn runner_entrypoint(inner_deadline: u64, uid: u32) -> Vec<String> {
    vec![
        VENV_PYTHON.to_string(),
        "-s".to_string(),
        "-S".to_string(),
        "-P".to_string(),
        "-u".to_string(),
        "-c".to_string(),
        RUNNER.to_string(),
        inner_deadline.to_string(),
        uid.to_string(),
        supervisor_uid(uid).to_string(),
    ]
}

/// Docker's create body for one session: exactly an execution's ([`container_spec`]), with
/// the session's lifetime as its idle time (so both deadlines cover the longest session plus
/// one call), the runner in session mode (it ends itself after `idle` without a call), and a
/// CPU-time budget for the whole lifetime (the interpreter is one process throughout).
pub fn session_spec(
    config: &SandboxConfig,
    image: &str,
    instance: &str,
    now: SystemTime,
    uid: u32,
) -> ContainerCreateBody {
    let sessions = &config.sessions;
    let mut spec = container_spec(config, image, instance, now, sessions.max_age, uid);
    if let Some(entrypoint) = spec.entrypoint.as_mut() {
        entrypoint.push(SESSION_MODE.to_string());
        entrypoint.push((sessions.idle + GRACE).as_secs().to_string());
    }
    if let Some(labels) = spec.labels.as_mut() {
        labels.remove(LABEL_WARM);
        let created = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        labels.insert(LABEL_SESSION.to_string(), created.to_string());
    }
    let limits = &config.limits;
    let cpu_seconds = (sessions.max_age + limits.timeout + GRACE).as_secs() as i64
        * ((limits.nano_cpus + 999_999_999) / 1_000_000_000);
    if let Some(ulimits) = spec.host_config.as_mut().and_then(|h| h.ulimits.as_mut()) {
        ulimits.retain(|u| u.name.as_deref() != Some("cpu"));
        ulimits.push(ulimit("cpu", cpu_seconds));
    }
    spec
}

/// A fresh uid for one container's program, drawn from [`CALL_UIDS`]: always even.
pub fn call_uid() -> u32 {
    let span = u128::from(CALL_UIDS.end - CALL_UIDS.start) / 2;
    CALL_UIDS.start + 2 * (uuid::Uuid::new_v4().as_u128() % span) as u32
}

/// The uid the supervisor of the program running as `program_uid` becomes: its own, odd, and
/// the program's plus one (so it is in no other container's program).
pub fn supervisor_uid(program_uid: u32) -> u32 {
    program_uid | 1
}

/// `timeout -s KILL <seconds>` by absolute path: whatever the container runs dies by itself at
/// its deadline, even when its server is gone.
fn deadline_entrypoint(seconds: u64) -> Vec<String> {
    [TIMEOUT, "-s", "KILL", &seconds.to_string()]
        .map(String::from)
        .to_vec()
}

/// What one install container is for; the rest comes from the sandbox's settings.
pub struct InstallTarget<'a> {
    /// The image pip installs into (the current environment, or the base for a rebuild).
    pub image: &'a str,
    /// The environment tag, recorded on the container for `doctor` and the tests.
    pub env_tag: &'a str,
    /// Docker network pip reaches its index through.
    pub network: &'a str,
    /// The install's time limit.
    pub timeout: Duration,
    /// The base image's environment, exactly: a commit merges the container's variables into
    /// the image, so the container carries no variable the base does not have.
    pub base_env: &'a [String],
    /// The base image's working directory.
    pub working_dir: &'a str,
    /// The program pip is driven by (`image/driver.py`).
    pub driver: &'a str,
}

/// Docker's create body for one install: the executions' hardening (no capabilities, no new
/// privileges, limits, init, deadline) but as the installer user, with a network, a writable
/// rootfs (the layer to commit) and the daemon's default runtime (gVisor is registered with
/// `--network=none`). The interpreter runs with `-I -S`: no `.pth` file of the environment
/// is processed, so no package code runs during the install.
pub fn install_spec(
    config: &SandboxConfig,
    target: &InstallTarget<'_>,
    instance: &str,
    now: SystemTime,
) -> ContainerCreateBody {
    let limits = &config.limits;
    let mut host_config = hardened_host_config(config);
    host_config.network_mode = Some(target.network.to_string());
    host_config.runtime = None;
    host_config.readonly_rootfs = Some(false);
    let cores = (limits.nano_cpus + 999_999_999) / 1_000_000_000;
    if let Some(ulimits) = host_config.ulimits.as_mut() {
        ulimits.retain(|u| u.name.as_deref() != Some("fsize"));
        ulimits.push(ulimit("fsize", INSTALL_FSIZE));
        ulimits.push(ulimit(
            "cpu",
            (target.timeout + GRACE).as_secs() as i64 * cores,
        ));
    }
    let mut labels = ownership_labels(instance, now + target.timeout + GRACE + GRACE);
    labels.insert(LABEL_INSTALL.to_string(), target.env_tag.to_string());
    ContainerCreateBody {
        image: Some(target.image.to_string()),
        user: Some(INSTALL_USER.to_string()),
        working_dir: Some(target.working_dir.to_string()),
        env: Some(target.base_env.to_vec()),
        entrypoint: Some(deadline_entrypoint((target.timeout + GRACE).as_secs())),
        cmd: Some(
            [VENV_PYTHON, "-I", "-S", "-u", "-c", target.driver]
                .map(String::from)
                .to_vec(),
        ),
        labels: Some(labels),
        host_config: Some(host_config),
        ..attached_body()
    }
}

/// The create body fields every container shares: explicit minimal env and workdir, and
/// stdin/stdout/stderr attached with stdin closed after the first attach ends.
pub fn attached_body() -> ContainerCreateBody {
    ContainerCreateBody {
        hostname: Some("sandbox".to_string()),
        working_dir: Some("/tmp".to_string()),
        env: Some(vec![
            "PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin".to_string(),
            "HOME=/tmp".to_string(),
            // The call's uid has no passwd entry: `getpass.getuser()` reads these first.
            "USER=sandbox".to_string(),
            "LOGNAME=sandbox".to_string(),
            "LANG=C.UTF-8".to_string(),
            "PYTHONUNBUFFERED=1".to_string(),
            "PYTHONDONTWRITEBYTECODE=1".to_string(),
        ]),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        ..Default::default()
    }
}

/// The owner and deadline labels the reaper reads.
pub fn ownership_labels(instance: &str, deadline: SystemTime) -> HashMap<String, String> {
    let deadline_secs = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    HashMap::from([
        (LABEL_OWNER.to_string(), instance.to_string()),
        (LABEL_DEADLINE.to_string(), deadline_secs.to_string()),
    ])
}

/// The isolation and limits every container gets, executions and installs alike: no
/// capabilities, no new privileges, Docker's init (executions turn it off: their runner is
/// the init), private IPC, memory without swap, CPU, processes,
/// file and output ulimits, a sized /tmp, no mounts, no devices, no logs. (Executions add
/// the read-only `--workspace` bind when one is set: `container_spec`.)
pub fn hardened_host_config(config: &SandboxConfig) -> HostConfig {
    let limits = &config.limits;
    let tmpfs_options = format!("rw,nosuid,nodev,size={},mode=1777", limits.tmp_bytes);
    HostConfig {
        runtime: config.runtime.clone(),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        privileged: Some(false),
        init: Some(true),
        ipc_mode: Some("private".to_string()),
        tmpfs: Some(HashMap::from([("/tmp".to_string(), tmpfs_options)])),
        shm_size: Some(limits.tmp_bytes),
        memory: Some(limits.memory_bytes),
        memory_swap: Some(limits.memory_bytes),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        // Every rlimit the sandbox relies on is set here, none left to the engine's defaults:
        // Podman fills unset ones (nproc among them) with values above some hosts' hard
        // limits, and the container then fails to start. nproc counts the container's own
        // uid (one per call), so it equals the pids limit.
        ulimits: Some(vec![
            ulimit("nproc", limits.pids),
            ulimit("nofile", 1024),
            ulimit("fsize", limits.tmp_bytes),
            ulimit("core", 0),
        ]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        }),
        binds: Some(Vec::new()),
        devices: Some(Vec::new()),
        auto_remove: Some(false),
        ..Default::default()
    }
}

fn ulimit(name: &str, value: i64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(value),
        hard: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::super::egress::add_egress;
    use super::super::protocol::EGRESS_DIR;
    use super::*;
    use crate::config::SandboxArgs;

    fn spec() -> ContainerCreateBody {
        let config = SandboxArgs::default().resolve().unwrap();
        container_spec(
            &config,
            "img",
            "instance-1",
            UNIX_EPOCH + Duration::from_secs(1000),
            Duration::ZERO,
            1_500_000_006,
        )
    }

    #[test]
    fn egress_adds_two_read_only_binds_and_the_proxy_variables_and_keeps_no_network() {
        let mut with = spec();
        let without = spec();
        add_egress(
            &mut with,
            Path::new("/tmp/x/egress/i7"),
            Path::new("/tmp/x/egress/resolv.conf"),
            None,
        );
        let host = with.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        let mounts = host.mounts.as_ref().unwrap();
        let targets: Vec<_> = mounts
            .iter()
            .map(|m| m.target.as_deref().unwrap())
            .collect();
        assert_eq!(targets, [EGRESS_DIR, "/etc/resolv.conf"]);
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        let added: Vec<_> = with
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter(|v| !without.env.as_ref().unwrap().contains(v))
            .cloned()
            .collect();
        assert!(added.contains(&"HTTPS_PROXY=http://127.0.0.1:3128".to_string()));
        assert!(added.contains(&"https_proxy=http://127.0.0.1:3128".to_string()));
        assert!(added.contains(&"NO_PROXY=localhost,127.0.0.1,::1".to_string()));
        assert_eq!(added.len(), 8, "{added:?}");
        // Everything else is the same hardened container.
        let mut host = host.clone();
        host.mounts = None;
        assert_eq!(Some(host), without.host_config);
    }

    #[test]
    fn a_session_is_an_execution_container_with_a_lifetime() {
        let config = SandboxArgs::default().resolve().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let session = session_spec(&config, "img", "instance-1", now, 1_500_000_006);
        let mut call = container_spec(&config, "img", "instance-1", now, Duration::ZERO, 8);
        // The same hardening, limits, network and mounts, ulimits aside (CPU time covers the
        // lifetime).
        let strip = |spec: &ContainerCreateBody| {
            let mut host = spec.host_config.clone().unwrap();
            host.ulimits = None;
            host
        };
        assert_eq!(strip(&session), strip(&call));
        call.user = session.user.clone();
        assert_eq!(session.env, call.env);
        let entrypoint = session.entrypoint.clone().unwrap();
        // Default lifetime 1 h, idle 10 min: the runner ends itself 5 s past each.
        assert_eq!(
            entrypoint[entrypoint.len() - 5..],
            ["3635", "1500000006", "1500000007", "session", "605"]
        );
        let labels = session.labels.clone().unwrap();
        assert_eq!(labels[LABEL_SESSION], "1000");
        assert_eq!(labels[LABEL_DEADLINE], (1000 + 3600 + 30 + 10).to_string());
        assert!(!labels.contains_key(LABEL_WARM));
        let ulimits = session.host_config.unwrap().ulimits.unwrap();
        let cpu: Vec<_> = ulimits
            .iter()
            .filter(|u| u.name.as_deref() == Some("cpu"))
            .collect();
        assert_eq!(cpu.len(), 1);
        let cores = (config.limits.nano_cpus + 999_999_999) / 1_000_000_000;
        assert_eq!(
            cpu[0].hard,
            Some((3600 + 30 + 5) * cores),
            "the whole lifetime"
        );
    }

    #[test]
    fn the_container_is_hardened_by_default() {
        let spec = spec();
        let host = spec.host_config.unwrap();
        assert_eq!(
            spec.user.as_deref(),
            Some("0:0"),
            "the runner gives out the uids"
        );
        let entrypoint = spec.entrypoint.unwrap();
        assert_eq!(
            entrypoint[8..],
            ["1500000006", "1500000007"],
            "the program's uid, then the supervisor's"
        );
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.cap_add,
            Some(
                ["SETUID", "SETGID", "SETPCAP", "KILL"]
                    .map(String::from)
                    .to_vec()
            ),
            "only what it takes to hand out two uids, and to signal the program"
        );
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(false), "the runner is the init");
        assert_eq!(host.binds, Some(vec![]));
        assert_eq!(host.devices, Some(vec![]));
        assert_eq!(
            host.memory, host.memory_swap,
            "no swap beyond the memory limit"
        );
        assert_eq!(host.pids_limit, Some(128));
        assert!(host.tmpfs.unwrap()["/tmp"].contains("size=67108864"));
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
    }

    #[test]
    fn labels_name_the_owner_and_a_deadline_past_the_timeout() {
        let labels = spec().labels.unwrap();
        assert_eq!(labels[LABEL_OWNER], "instance-1");
        assert!(
            !labels.contains_key(LABEL_WARM),
            "a call's own container is not warm"
        );
        // 1000 s + 30 s timeout + two grace periods of 5 s.
        assert_eq!(labels[LABEL_DEADLINE], "1040");
    }

    #[test]
    fn the_program_has_its_own_deadline_and_cpu_budget() {
        let spec = spec();
        let entrypoint = spec.entrypoint.unwrap();
        assert_eq!(
            entrypoint[..6],
            ["/opt/venv/bin/python3", "-s", "-S", "-P", "-u", "-c"],
            "the supervisor starts with no site and nothing writable on sys.path"
        );
        assert_eq!(entrypoint[7], "35", "the runner's own deadline");
        assert_eq!(spec.cmd, Some(vec![]), "the image's CMD is not appended");
        let ulimits = spec.host_config.unwrap().ulimits.unwrap();
        let cpu = ulimits
            .iter()
            .find(|u| u.name.as_deref() == Some("cpu"))
            .unwrap();
        assert_eq!(cpu.hard, Some(35));
    }

    #[test]
    fn a_warm_container_gets_its_idle_time_on_top_of_the_timeout() {
        let config = SandboxArgs::default().resolve().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let spec = container_spec(
            &config,
            "img",
            "i",
            now,
            Duration::from_secs(300),
            1_500_000_000,
        );
        assert_eq!(spec.entrypoint.unwrap()[7], "335");
        let labels = spec.labels.unwrap();
        assert_eq!(labels[LABEL_DEADLINE], "1340");
        assert_eq!(labels[LABEL_WARM], "1");
        let ulimits = spec.host_config.unwrap().ulimits.unwrap();
        let cpu = ulimits
            .iter()
            .find(|u| u.name.as_deref() == Some("cpu"))
            .unwrap();
        assert_eq!(cpu.hard, Some(35), "idle time costs no CPU budget");
    }

    #[test]
    fn every_call_draws_its_own_uid_from_a_range_nothing_owns() {
        let uids: std::collections::HashSet<u32> = (0..1000).map(|_| call_uid()).collect();
        assert!(uids.len() > 990, "uids repeat: {}", uids.len());
        assert!(uids.iter().all(|uid| CALL_UIDS.contains(uid)));
        assert!(
            uids.iter()
                .all(|&uid| uid % 2 == 0 && CALL_UIDS.contains(&supervisor_uid(uid))),
            "programs even, supervisors odd, both in the range"
        );
        assert!(
            !CALL_UIDS.contains(&0) && !CALL_UIDS.contains(&10001) && !CALL_UIDS.contains(&10002)
        );
        const { assert!(CALL_UIDS.end <= 1 << 31) };
    }

    #[test]
    fn env_is_explicit_and_minimal() {
        let env = spec().env.unwrap();
        assert!(
            env.iter()
                .all(|e| !e.contains("SECRET") && !e.starts_with("DOCKER"))
        );
        assert!(env.contains(&"HOME=/tmp".to_string()));
    }

    fn install() -> ContainerCreateBody {
        let config = SandboxArgs::default().resolve().unwrap();
        let base_env = ["PATH=/opt/venv/bin:/usr/bin:/bin".to_string()];
        let target = InstallTarget {
            image: "env-image",
            env_tag: "repo/env:current",
            network: "bridge",
            timeout: Duration::from_secs(600),
            base_env: &base_env,
            working_dir: "/tmp",
            driver: "print('driver')",
        };
        install_spec(
            &config,
            &target,
            "instance-1",
            UNIX_EPOCH + Duration::from_secs(1000),
        )
    }

    #[test]
    fn the_install_container_never_runs_pip_as_root_nor_package_code() {
        let spec = install();
        assert_eq!(spec.user.as_deref(), Some(INSTALL_USER));
        assert_ne!(
            spec.user.as_deref(),
            Some("10001:10001"),
            "not the image's sandbox user"
        );
        assert!(!spec.user.as_deref().unwrap().starts_with("0"));
        let cmd = spec.cmd.unwrap();
        assert_eq!(cmd[..5], ["/opt/venv/bin/python3", "-I", "-S", "-u", "-c"]);
        assert_eq!(cmd[5], "print('driver')");
        assert_eq!(spec.image.as_deref(), Some("env-image"));
    }

    #[test]
    fn the_install_container_keeps_the_execution_hardening() {
        let spec = install();
        let host = spec.host_config.unwrap();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.memory, host.memory_swap);
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.binds, Some(vec![]));
        assert_eq!(host.devices, Some(vec![]));
        assert!(host.tmpfs.unwrap()["/tmp"].contains("nosuid,nodev"));
        // What differs from an execution, and why: pip needs the index, writes the layer,
        // and gVisor is registered without a network.
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.readonly_rootfs, Some(false));
        assert_eq!(host.runtime, None);
        let ulimits = host.ulimits.unwrap();
        let find = |name: &str| {
            ulimits
                .iter()
                .filter(|u| u.name.as_deref() == Some(name))
                .map(|u| u.hard)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("fsize"), [Some(4 << 30)]);
        assert_eq!(find("cpu"), [Some(605)]);
    }

    #[test]
    fn the_install_container_has_a_deadline_inside_and_out() {
        let spec = install();
        assert_eq!(
            spec.entrypoint.unwrap(),
            ["/usr/bin/timeout", "-s", "KILL", "605"]
        );
        let labels = spec.labels.unwrap();
        assert_eq!(labels[LABEL_OWNER], "instance-1");
        assert_eq!(labels[LABEL_DEADLINE], "1610");
        assert_eq!(labels[LABEL_INSTALL], "repo/env:current");
    }

    #[test]
    fn the_install_container_carries_exactly_the_base_environment() {
        let spec = install();
        assert_eq!(spec.env.unwrap(), ["PATH=/opt/venv/bin:/usr/bin:/bin"]);
        assert_eq!(spec.working_dir.as_deref(), Some("/tmp"));
    }
}
