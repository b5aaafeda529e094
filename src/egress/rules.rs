//! The egress allowlist: the patterns an operator gives (`--allow-host`,
//! `PYEXEC_ALLOW_HOSTS`), parsed and checked at start, and the one decision the proxy asks of
//! them: may a program reach this host on this port? Pure: no resolving, no sockets.
//!
//! A pattern is `host`, `host:port`, `*.example.com` (its subdomains, never the apex), an IP
//! literal (`10.251.0.2`, `[2001:db8::1]`) or a CIDR (`10.251.0.0/24`), each optionally with
//! `:port`; without a port, 80 and 443. Names are ASCII (IDNA names in their `xn--` form),
//! compared without case and without a trailing dot.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::address::forbidden;

/// The ports a pattern without one allows: plain HTTP and HTTPS.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// What a pattern names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// One host name, normalized.
    Name(String),
    /// Every name under this one (normalized, without the `*.`), not the name itself.
    Below(String),
    /// Addresses: one (a /32 or /128) or a network.
    Net(IpNet),
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    target: Target,
    /// `None`: [`DEFAULT_PORTS`].
    port: Option<u16>,
    /// The pattern as given, for messages.
    text: String,
}

/// The allowlist: empty means no network at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<Rule>,
}

/// A pattern refused at start, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--allow-host `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// What a program asked to reach, normalized: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// Reads the host of a request (a `CONNECT` target's or a URL's, without the port):
    /// a name, an IPv4 literal, or an IPv6 literal in brackets. Anything else (numeric
    /// forms that resolvers read as addresses, such as `2130706433` or `0x7f.1`, characters
    /// outside a host name, an empty or overlong name) is refused with why.
    pub fn parse(text: &str) -> Result<Host, String> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<std::net::Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| format!("`{text}` is not an IPv6 address"));
        }
        if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        normal_name(text).map(Host::Name)
    }
}

/// A host name in the form names are compared in: ASCII lower case, no trailing dot; labels
/// of letters, digits, `-` and `_` (1 to 63 each, not starting or ending with `-`), 253 at
/// most in all, and not all-numeric (a resolver would read it as an address).
fn normal_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(format!("`{text}` is not a host name (1 to 253 characters)"));
    }
    if !name.is_ascii() {
        return Err(format!(
            "`{text}` is not ASCII: give an international name in its xn-- form"
        ));
    }
    for label in name.split('.') {
        let fine = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !fine {
            return Err(format!(
                "`{text}` is not a host name (labels of letters, digits, - and _, 1 to 63 each)"
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || name.starts_with("0x") {
        return Err(format!(
            "`{text}` reads as a number, not a host name (write an address as a.b.c.d)"
        ));
    }
    Ok(name)
}

impl Rule {
    /// Parses one pattern.
    pub fn parse(pattern: &str) -> Result<Rule, PatternError> {
        let refuse = |reason: String| PatternError {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.contains("://") || pattern.contains(['/', '@', '?', '#']) && !is_cidr(pattern) {
            return Err(refuse(
                "give a host (and port), not a URL: e.g. api.github.com or api.github.com:443"
                    .to_string(),
            ));
        }
        let (host, port) = split_port(pattern).map_err(refuse)?;
        let target = if let Ok(net) = host.parse::<IpNet>() {
            Target::Net(net.trunc())
        } else if let Ok(Host::Ip(ip)) = Host::parse(host) {
            Target::Net(IpNet::from(ip))
        } else if let Some(below) = host.strip_prefix("*.") {
            let below = normal_name(below).map_err(refuse)?;
            if !below.contains('.') {
                return Err(refuse(format!(
                    "`*.{below}` would allow every name under a top-level domain; name the \
                     domain (e.g. *.example.{below})"
                )));
            }
            Target::Below(below)
        } else if host.contains('*') {
            return Err(refuse(
                "a wildcard is only `*.` at the start (e.g. *.example.com)".to_string(),
            ));
        } else {
            Target::Name(normal_name(host).map_err(refuse)?)
        };
        Ok(Rule {
            target,
            port,
            text: pattern.to_string(),
        })
    }

    /// Whether this rule lets a program reach `host` on `port`.
    fn allows(&self, host: &Host, port: u16) -> bool {
        let port_ok = match self.port {
            Some(allowed) => allowed == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok
            && match (&self.target, host) {
                (Target::Name(name), Host::Name(asked)) => name == asked,
                (Target::Below(below), Host::Name(asked)) => asked
                    .strip_suffix(below.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                (Target::Net(net), Host::Ip(ip)) => net.contains(ip),
                _ => false,
            }
    }

    /// The pattern as the operator gave it.
    pub fn as_text(&self) -> &str {
        &self.text
    }
}

fn is_cidr(pattern: &str) -> bool {
    let host = split_port(pattern).map(|(host, _)| host).unwrap_or(pattern);
    host.parse::<IpNet>().is_ok()
}

/// `host[:port]`, `[v6][:port]`, `cidr[:port]`; a bare IPv6 address (two colons or more)
/// takes no port unless bracketed.
fn split_port(pattern: &str) -> Result<(&str, Option<u16>), String> {
    let port_of = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{text}` is not a port (1 to 65535)"))
    };
    if pattern.starts_with('[') {
        let close = pattern
            .find(']')
            .ok_or_else(|| "an IPv6 address opened with [ is not closed".to_string())?;
        let (host, rest) = pattern.split_at(close + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port_of(port)?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(format!("`{rest}` after the address is not `:port`")),
        };
    }
    if pattern.matches(':').count() >= 2 {
        // An IPv6 address or network without brackets: no port.
        return Ok((pattern, None));
    }
    match pattern.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port_of(port)?))),
        None => Ok((pattern, None)),
    }
}

impl Allowlist {
    /// Parses a list: patterns separated by commas and/or white space (as in
    /// `PYEXEC_ALLOW_HOSTS`), or given one by one. The first bad one is refused, named.
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, PatternError> {
        let mut rules = Vec::new();
        for pattern in patterns
            .into_iter()
            .flat_map(|p| p.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|p| !p.is_empty())
        {
            let rule = Rule::parse(pattern)?;
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that lets a program reach `host` on `port`, if any.
    pub fn allowing(&self, host: &Host, port: u16) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.allows(host, port))
    }

    /// Whether the list names `ip` itself (an IP literal, or a CIDR holding it that lies
    /// wholly in the same kind of address): then it may be reached even when it is loopback,
    /// private or link-local, since the operator named it. A broad network does not name what
    /// it only happens to hold: `0.0.0.0/0:443` opens no loopback service and no metadata
    /// endpoint.
    pub fn names_address(&self, ip: IpAddr) -> bool {
        let kind = forbidden(ip);
        self.rules.iter().any(|rule| {
            matches!(&rule.target, Target::Net(net)
                if net.contains(&ip)
                    && forbidden(net.network()) == kind
                    && forbidden(net.broadcast()) == kind)
        })
    }

    /// The patterns, as given: for the tool description and messages.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(Rule::as_text)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_broad_network_names_only_addresses_of_its_own_kind() {
        let list =
            Allowlist::parse(["0.0.0.0/0:8999", "::/0", "10.20.0.0/16", "127.0.0.1"]).unwrap();
        for ip in [
            "169.254.169.254",
            "127.0.0.2",
            "::1",
            "fe80::1",
            "192.168.1.1",
        ] {
            assert!(!list.names_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.20.3.4", "127.0.0.1"] {
            assert!(list.names_address(ip.parse().unwrap()), "{ip}");
        }
        let metadata = Allowlist::parse(["169.254.169.254"]).unwrap();
        assert!(metadata.names_address("169.254.169.254".parse().unwrap()));
        assert!(!metadata.names_address("169.254.169.253".parse().unwrap()));
    }

    use super::*;

    fn list(text: &str) -> Allowlist {
        Allowlist::parse([text]).unwrap()
    }

    fn allows(list: &Allowlist, host: &str, port: u16) -> bool {
        list.allowing(&Host::parse(host).unwrap(), port).is_some()
    }

    #[test]
    fn hostile_or_malformed_patterns_are_refused_naming_the_pattern() {
        for bad in [
            "*",
            "*.com",
            "**.example.com",
            "a.*.example.com",
            "*example.com",
            "example.*",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "example.com:",
            "https://example.com",
            "example.com/path",
            "user@example.com",
            "example.com?x=1",
            "-example.com",
            "example-.com",
            "bücher.example",
            "a..example.com",
            ".example.com",
            "2130706433",
            "0x7f000001",
            "127.1",
            "10.0.0.0/33",
            "[::1",
            "[::1]x",
            "[not-v6]:443",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(127)),
        ] {
            let error = Allowlist::parse([bad]).expect_err(bad);
            assert_eq!(error.pattern, bad);
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("--allow-host `{bad}`: "))
            );
        }
    }

    #[test]
    fn a_name_allows_itself_on_80_and_443_only() {
        let allowed = list("API.Example.com.");
        assert!(allows(&allowed, "api.example.com", 443));
        assert!(allows(&allowed, "API.EXAMPLE.COM.", 80));
        assert!(!allows(&allowed, "api.example.com", 22));
        assert!(!allows(&allowed, "api.example.com", 8443));
        assert!(!allows(&allowed, "www.api.example.com", 443));
        assert!(!allows(&allowed, "example.com", 443));
        assert!(!allows(&allowed, "api.example.com.evil.net", 443));
        assert!(!allows(&allowed, "apiexample.com", 443));
    }

    #[test]
    fn a_port_in_the_pattern_is_the_only_port() {
        let allowed = list("example.com:8443");
        assert!(allows(&allowed, "example.com", 8443));
        assert!(!allows(&allowed, "example.com", 443));
        assert!(!allows(&allowed, "example.com", 80));
    }

    #[test]
    fn a_wildcard_allows_subdomains_never_the_apex_or_a_lookalike() {
        let allowed = list("*.githubusercontent.com");
        assert!(allows(&allowed, "raw.githubusercontent.com", 443));
        assert!(allows(&allowed, "a.b.githubusercontent.com", 443));
        assert!(!allows(&allowed, "githubusercontent.com", 443));
        assert!(!allows(&allowed, "evilgithubusercontent.com", 443));
        assert!(!allows(&allowed, "githubusercontent.com.evil.net", 443));
        assert!(!allows(&allowed, "raw.githubusercontent.com.evil.net", 443));
    }

    #[test]
    fn addresses_match_only_address_rules_and_names_only_name_rules() {
        let allowed =
            Allowlist::parse(["10.251.0.0/24:8080", "[2001:db8::1]", "93.184.216.34"]).unwrap();
        assert!(allows(&allowed, "10.251.0.2", 8080));
        assert!(!allows(&allowed, "10.251.0.2", 443));
        assert!(!allows(&allowed, "10.251.1.2", 8080));
        assert!(allows(&allowed, "[2001:db8::1]", 443));
        assert!(!allows(&allowed, "[2001:db8::2]", 443));
        assert!(allows(&allowed, "93.184.216.34", 80));
        assert!(allowed.names_address("10.251.0.9".parse().unwrap()));
        assert!(!allowed.names_address("10.251.1.9".parse().unwrap()));
        // A name never matches an address rule, whatever it resolves to (that is the
        // proxy's check, on the resolved addresses).
        let named = list("example.com");
        assert!(!named.names_address("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn a_list_splits_on_commas_and_space_and_drops_repeats() {
        let allowed =
            Allowlist::parse(["api.github.com, *.githubusercontent.com\n api.github.com"]).unwrap();
        assert_eq!(
            allowed.patterns().collect::<Vec<_>>(),
            ["api.github.com", "*.githubusercontent.com"]
        );
        assert!(Allowlist::parse([" , "]).unwrap().is_empty());
    }

    #[test]
    fn a_requested_host_is_read_strictly() {
        assert_eq!(
            Host::parse("Example.COM.").unwrap(),
            Host::Name("example.com".to_string())
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(Host::parse("[::1]").unwrap().to_string(), "[::1]");
        for bad in [
            "",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "127.1",
            "::1",
            "[127.0.0.1]",
            "a b",
            "a\u{0}b",
            "exa%6dple.com",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
