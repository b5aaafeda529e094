//! The egress flags (`EgressArgs`, part of the sandbox's): which hosts a program may reach
//! through the server's own proxy, and the proxy's limits per call; resolved into the
//! proxy's [`Policy`], or refused at start when they cannot hold (a bad pattern, a
//! `--network` that would bypass the proxy, an engine that cannot reach it).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::values::size_in;
use crate::egress::{Allowlist, Policy};

/// How long the proxy waits to resolve and connect to an allowed host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Egress: the allowlist and the proxy's limits, as flags with `PYEXEC_*` fallbacks.
#[derive(Debug, Clone, Args)]
pub struct EgressArgs {
    /// A host code may reach through the server's egress proxy: host, host:port, *.domain
    /// (its subdomains), an IP or a CIDR, each with an optional :port (80 and 443 without).
    /// Repeatable; the variable takes a comma- or space-separated list. Default: none (no
    /// network at all)
    #[arg(
        long = "allow-host",
        global = true,
        env = "PYEXEC_ALLOW_HOSTS",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub allow_host: Vec<String>,

    /// Let allowed names resolve to private network addresses (10/8, 172.16/12,
    /// 192.168/16, 100.64/10, fc00::/7), for a company's internal APIs; loopback and
    /// link-local (cloud metadata) stay refused
    #[arg(long, global = true, env = "PYEXEC_EGRESS_ALLOW_PRIVATE")]
    pub egress_allow_private: bool,

    /// Bytes one call may send and receive through the egress proxy, all connections
    /// together (1k-64g); a connection that passes it is cut
    #[arg(long, global = true, env = "PYEXEC_EGRESS_MAX_BYTES", default_value = "64m",
          value_parser = egress_bytes)]
    pub egress_max_bytes: u64,

    /// Connections one call may have open through the egress proxy at once (1-1024)
    #[arg(long, global = true, env = "PYEXEC_EGRESS_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub egress_max_connections: u64,

    /// A credential the egress proxy puts into requests to its hosts only: NAME=HOST[,HOST…]
    /// (443 unless HOST:PORT; bound hosts are allowed). The value comes from the server's
    /// environment variable NAME; code sees a placeholder. Repeatable; the variable
    /// separates secrets with `;`
    #[arg(
        long = "secret",
        global = true,
        env = "PYEXEC_SECRETS",
        value_delimiter = ';',
        value_name = "NAME=HOST"
    )]
    pub secret: Vec<String>,
}

fn egress_bytes(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 10, 64 << 30, "1k", "64g")
}

impl EgressArgs {
    /// The proxy's policy, or `None` without an allowlist (no network, as before). Refused
    /// with the reason: a bad pattern (named), a `--network` other than `none` (it would
    /// bypass the proxy), and an engine that is not on this machine (`docker_host`: its
    /// containers cannot reach a socket of this process).
    pub fn resolve(&self, network: &str, docker_host: &str) -> anyhow::Result<Option<Arc<Policy>>> {
        let patterns: Vec<&str> = self
            .allow_host
            .iter()
            .flat_map(|value| value.split_whitespace())
            .filter(|pattern| !pattern.is_empty())
            .collect();
        let secrets = super::secrets::load(&self.secret)?;
        if patterns.is_empty() && secrets.is_none() {
            return Ok(None);
        }
        let bound = secrets
            .as_ref()
            .map(super::secrets::patterns)
            .unwrap_or_default();
        let every = patterns
            .iter()
            .copied()
            .chain(bound.iter().map(String::as_str));
        let allow = Allowlist::parse(every).map_err(|error| {
            anyhow::anyhow!(
                "--allow-host (PYEXEC_ALLOW_HOSTS) `{}`: {}\nhint: write host, host:port, \
                 *.example.com, an IP or a CIDR, each with an optional :port",
                error.pattern,
                error.reason
            )
        })?;
        if network != "none" {
            anyhow::bail!(
                "--allow-host (PYEXEC_ALLOW_HOSTS) needs --network none (PYEXEC_NETWORK), not \
                 `{network}`: with a network of its own a program could go around the egress \
                 proxy\nhint: drop --network, or drop --allow-host to keep that network"
            );
        }
        if !docker_host.starts_with("unix://") {
            anyhow::bail!(
                "--allow-host (PYEXEC_ALLOW_HOSTS) needs an engine on this machine, and \
                 DOCKER_HOST is {docker_host}: the egress proxy runs in this server and \
                 reaches its containers through a local socket\nhint: run the server on the \
                 engine's machine, or drop --allow-host"
            );
        }
        Ok(Some(Arc::new(Policy {
            allow,
            allow_private: self.egress_allow_private,
            max_bytes: self.egress_max_bytes,
            max_connections: self.egress_max_connections as usize,
            connect_timeout: CONNECT_TIMEOUT,
            secrets: secrets.map(Arc::new),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        args: EgressArgs,
    }

    fn resolve(argv: &[&str], network: &str, host: &str) -> anyhow::Result<Option<Arc<Policy>>> {
        let argv = std::iter::once("x").chain(argv.iter().copied());
        Flags::try_parse_from(argv)
            .unwrap()
            .args
            .resolve(network, host)
    }

    const LOCAL: &str = "unix:///var/run/docker.sock";

    #[test]
    fn without_an_allowlist_there_is_no_proxy() {
        assert!(resolve(&[], "none", LOCAL).unwrap().is_none());
        assert!(resolve(&[], "bridge", "tcp://x:2376").unwrap().is_none());
    }

    #[test]
    fn patterns_come_repeated_or_as_one_list_with_commas_or_spaces() {
        let policy = resolve(
            &[
                "--allow-host",
                "api.github.com, *.githubusercontent.com",
                "--allow-host=10.0.0.0/8:8080 pypi.org",
            ],
            "none",
            LOCAL,
        )
        .unwrap()
        .unwrap();
        let patterns: Vec<&str> = policy.allow.patterns().collect();
        assert_eq!(patterns.len(), 4, "{patterns:?}");
        assert_eq!(policy.max_bytes, 64 << 20);
        assert_eq!(policy.max_connections, 64);
        assert!(!policy.allow_private);
    }

    #[test]
    fn a_bad_pattern_is_named_and_a_bypassing_network_or_a_remote_engine_refused() {
        for bad in [
            "*",
            "*.com",
            "http://x.org/",
            "a@b.org",
            "2130706433",
            "x.org:0",
        ] {
            let error = resolve(&["--allow-host", bad], "none", LOCAL)
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
        let error = resolve(&["--allow-host", "x.org"], "bridge", LOCAL)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--network none"), "{error}");
        for remote in [
            "tcp://10.0.0.5:2376",
            "ssh://me@build",
            "npipe:////./pipe/x",
        ] {
            let error = resolve(&["--allow-host", "x.org"], "none", remote)
                .unwrap_err()
                .to_string();
            assert!(error.contains("on this machine"), "{remote}: {error}");
        }
    }
}
