//! The `--secret NAME=HOST[,HOST…]` flags (`PYEXEC_SECRETS`), read into the proxy's
//! [`Secrets`]: each value from the server's own environment variable `NAME` (never from the
//! command line, where `ps` shows it), each host checked. Refused at start, naming the secret
//! and never showing its value, when a value is missing, empty or unfit for a header, a name
//! would shadow a variable the sandbox needs, or a host is not one host.

use std::os::unix::ffi::OsStrExt;

use zeroize::Zeroizing;

use crate::egress::{Host, Secret, Secrets};

/// The port a bound host without one is reached on (HTTPS: a secret travels only over TLS).
pub const SECRET_PORT: u16 = 443;

/// Variables the sandbox sets itself: a secret may not take their name.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "MPLBACKEND",
    "MPLCONFIGDIR",
];

/// Reads `specs` (each `NAME=HOST[,HOST…]`; `;` already split) into secrets, with their values
/// from this process's environment. `None` without any.
pub fn load(specs: &[String]) -> anyhow::Result<Option<Secrets>> {
    let mut list: Vec<Secret> = Vec::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (name, hosts) = parse(spec).map_err(|why| {
            anyhow::anyhow!(
                "--secret (PYEXEC_SECRETS) `{spec}`: {why}\nhint: write NAME=HOST[,HOST…], with \
                 the value in the server's environment variable NAME"
            )
        })?;
        if list.iter().any(|s| s.name() == name) {
            anyhow::bail!("--secret (PYEXEC_SECRETS): {name} is named twice");
        }
        let value = match std::env::var_os(&name) {
            Some(value) if !value.is_empty() => Zeroizing::new(value.as_bytes().to_vec()),
            found => anyhow::bail!(
                "--secret {name}: the server's environment variable {name} is {}; the value is \
                 read from there, never from the command line\nhint: set {name} in the \
                 environment the server starts with (Claude Desktop: its \"env\" block)",
                if found.is_some() { "empty" } else { "not set" }
            ),
        };
        list.push(Secret::new(&name, value, hosts).map_err(anyhow::Error::msg)?);
    }
    if list.is_empty() {
        return Ok(None);
    }
    Secrets::new(list).map(Some).map_err(anyhow::Error::msg)
}

/// `NAME=HOST[,HOST…]`: the name and its hosts with their ports, or why not.
fn parse(spec: &str) -> Result<(String, Vec<(Host, u16)>), String> {
    let (name, hosts) = spec
        .split_once('=')
        .ok_or_else(|| "no `=` between the name and its hosts".to_string())?;
    let name = name.trim();
    let fine = name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !fine {
        return Err(format!(
            "`{name}` is not an environment variable's name (letters, digits, _)"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str())
        || ["PYEXEC_", "PYTHON", "LD_", "PIP_", "LC_"]
            .iter()
            .any(|p| upper.starts_with(p))
    {
        return Err(format!(
            "{name} is a variable the sandbox sets or reads itself"
        ));
    }
    let mut bound = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        bound.push(bound_host(host)?);
    }
    if bound.is_empty() {
        return Err(format!("{name} is bound to no host"));
    }
    Ok((name.to_string(), bound))
}

/// One bound host: `name`, `name:port`, an IP, `[v6]` or `[v6]:port`; no pattern.
fn bound_host(text: &str) -> Result<(Host, u16), String> {
    let authority: hyper::http::uri::Authority = text
        .parse()
        .map_err(|_| format!("`{text}` is not a host or host:port"))?;
    if text.contains('@') || text.contains('*') {
        return Err(format!(
            "`{text}` is not one host (a secret is bound to exact names, no pattern)"
        ));
    }
    let host = Host::parse(authority.host()).map_err(|why| format!("`{text}`: {why}"))?;
    let port = match authority.port_u16() {
        Some(0) => return Err(format!("`{text}`: port 0")),
        Some(port) => port,
        None => SECRET_PORT,
    };
    Ok((host, port))
}

/// The allowlist patterns the bound hosts add (each is allowed on its port).
pub fn patterns(secrets: &Secrets) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|s| s.hosts().iter())
        .map(|(host, port)| format!("{host}:{port}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_a_variable_and_exact_hosts() {
        let (name, hosts) = parse("GITHUB_TOKEN=api.github.com, Uploads.GitHub.com.:8443").unwrap();
        assert_eq!(name, "GITHUB_TOKEN");
        assert_eq!(hosts[0], (Host::parse("api.github.com").unwrap(), 443));
        assert_eq!(hosts[1], (Host::parse("uploads.github.com").unwrap(), 8443));
        assert_eq!(parse("K=10.251.0.2").unwrap().1[0].1, 443);
        for bad in [
            "NOEQUALS",
            "1K=a.org",
            "K-2=a.org",
            "PATH=a.org",
            "https_proxy=a.org",
            "PYEXEC_X=a.org",
            "K=",
            "K=*.a.org",
            "K=u@a.org",
            "K=http://a.org/",
            "K=a.org:0",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_missing_or_empty_value_is_refused_by_name() {
        let missing = load(&["PYEXEC_TEST_SURELY_UNSET_1=a.org".into()]);
        assert!(missing.is_err(), "a reserved prefix, or unset");
        let error = load(&["SURELY_UNSET_SECRET_XYZ=a.org".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("SURELY_UNSET_SECRET_XYZ") && error.contains("not set"),
            "{error}"
        );
    }
}
