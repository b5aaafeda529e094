//! `doctor`'s egress check (with `--allow-host`): one real call in a container of this
//! engine and runtime, which asks its proxy (through the runner's relay and the mounted
//! socket) for a host no allowlist names, and must get the proxy's own 403 back. That one
//! answer proves the whole way out works here: the mount, the runtime passing the host socket
//! in (gVisor needs `--host-uds=open`), the relay and the proxy. With `--secret`, the same
//! call checks that every secret's placeholder is in the environment and that the proxy's
//! certificate authority loads.

use std::time::Duration;

use super::finding::{Finding, Verdict, finding};
use crate::sandbox::{ExecutionRequest, Sandbox};
use crate::settings::SandboxConfig;

/// What the probe call learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// The proxy answered from inside a container.
    Answered,
    /// Why not: the call's error, or what the container saw instead.
    Failed(String),
}

/// The host the probe asks for: `.invalid` is reserved, and a bare pattern for it would
/// have to be listed on purpose.
const PROBE_HOST: &str = "pyexec-doctor.invalid";

/// Runs the probe call (a container of `config`'s image and runtime, removed after).
pub async fn probe(config: &SandboxConfig) -> Probe {
    let mut alone = config.clone();
    alone.pool.size = 0;
    let sandbox = Sandbox::new(alone);
    let mut code = format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n\
         s.sendall(b'CONNECT {PROBE_HOST}:1 HTTP/1.1\\r\\nHost: {PROBE_HOST}:1\\r\\n\\r\\n')\n\
         print(s.recv(4096).decode(errors='replace'))\n"
    );
    let names: Vec<&str> = config
        .egress
        .as_ref()
        .and_then(|p| p.secrets.as_deref())
        .map(|s| s.iter().map(|s| s.name()).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        // Each secret's placeholder is in place, and the proxy's authority loads.
        code.push_str(&format!(
            "import os, ssl\n\
             ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE'])\n\
             bad = [n for n in {names:?} if not os.environ.get(n, '').startswith('pyexec_')]\n\
             print('secrets: no placeholder in ' + ', '.join(bad) if bad else 'secrets in place')\n"
        ));
    }
    let ran = sandbox
        .execute(
            &ExecutionRequest::new(&code),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
    sandbox.shutdown(Duration::from_secs(10)).await;
    match ran {
        Ok(result)
            if result.stdout.contains("egress refused")
                && (names.is_empty() || result.stdout.contains("secrets in place")) =>
        {
            Probe::Answered
        }
        Ok(result) => Probe::Failed(format!(
            "the container could not reach its proxy: {}",
            result
                .stderr
                .lines()
                .last()
                .or_else(|| result.stdout.lines().next())
                .unwrap_or("no output")
        )),
        Err(error) => Probe::Failed(error.to_string()),
    }
}

/// What `policy` lets code reach: its patterns, and each secret with its hosts (never a
/// value).
pub fn allowed(policy: &crate::egress::Policy) -> Vec<String> {
    let mut allowed: Vec<String> = policy.allow.patterns().map(str::to_string).collect();
    for secret in policy.secrets.iter().flat_map(|s| s.iter()) {
        let hosts: Vec<String> = secret
            .hosts()
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        allowed.push(format!("secret {} for {}", secret.name(), hosts.join(" ")));
    }
    allowed
}

/// The egress finding of a probe, with the allowlist it ran under.
pub fn assess(probe: &Probe, allowed: &[String]) -> Finding {
    let hosts = allowed.join(", ");
    match probe {
        Probe::Answered => finding(
            Verdict::Ok,
            "egress",
            format!("a container reaches its proxy; allowed: {hosts}"),
            None,
        ),
        Probe::Failed(why) => {
            let hinted = crate::hint::Hinted::parse(why);
            let next = hinted.hints.first().cloned().unwrap_or_else(|| {
                "check the runtime (gVisor needs --host-uds=open: SECURITY.md, Egress under \
                 gVisor) and that the image runs (the image check above)"
                    .to_string()
            });
            Finding {
                verdict: Verdict::Fail,
                check: "egress",
                detail: format!("{}; allowed: {hosts}", hinted.reason),
                next: Some(next),
            }
        }
    }
}
