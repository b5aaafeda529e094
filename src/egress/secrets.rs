//! Credentials the sandbox never holds (`--secret NAME=HOST`). Each secret's value stays in
//! this process; the program's environment holds a placeholder instead, which the proxy swaps
//! for the value only in requests to the hosts the secret is bound to, and swaps back in
//! their answers. A placeholder on its way anywhere else is refused as an attempted leak.
//!
//! This module owns the secrets and the text work: finding placeholders (in any letter case),
//! injecting values, masking them in answers. The TLS that lets the proxy read a bound host's
//! requests is `authority.rs`'s and `intercept.rs`'s.

use std::fmt;

use zeroize::Zeroizing;

use super::authority::Authority;
use super::rules::Host;
use super::text::{find, json_escaped, percent_encoded, replace};

/// A value shorter than this is refused: the proxy masks it wherever it appears in a bound
/// host's answers, and a short one would turn up in ordinary text.
pub const MIN_VALUE: usize = 8;
/// A value longer than this is refused (a header carries it).
pub const MAX_VALUE: usize = 4096;
/// Every placeholder starts with this, then 48 lower-case hex digits (about 180 random bits).
pub const PLACEHOLDER_PREFIX: &str = "pyexec_";

/// One credential: its name (the program's environment variable), its value (this process
/// only) and the hosts and ports it may be sent to.
pub struct Secret {
    name: String,
    value: Zeroizing<Vec<u8>>,
    /// The forms the value is masked in, in any letter case: as it is, percent-encoded and
    /// JSON-escaped (an answer may echo it in either).
    forms: Vec<Zeroizing<Vec<u8>>>,
    placeholder: String,
    hosts: Vec<(Host, u16)>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// A secret named `name` holding `value`, bound to `hosts`, with a fresh placeholder.
    /// Refused (naming the secret, never showing the value) when the value is too short, too
    /// long or holds anything but visible ASCII.
    pub fn new(
        name: &str,
        value: Zeroizing<Vec<u8>>,
        hosts: Vec<(Host, u16)>,
    ) -> Result<Self, String> {
        if value.len() < MIN_VALUE || value.len() > MAX_VALUE {
            return Err(format!(
                "secret {name}: its value must be {MIN_VALUE} to {MAX_VALUE} characters (it \
                 is masked wherever it appears in a bound host's answers)"
            ));
        }
        if !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(format!(
                "secret {name}: its value must be visible ASCII, no space or control character \
                 (it travels in a header)"
            ));
        }
        let mut forms = vec![value.clone()];
        for form in [
            percent_encoded(&value),
            json_escaped(&value, false),
            json_escaped(&value, true),
        ] {
            if !forms.iter().any(|f| f.eq_ignore_ascii_case(&form)) {
                forms.push(form);
            }
        }
        Ok(Self {
            name: name.to_string(),
            value,
            forms,
            placeholder: placeholder(),
            hosts,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hosts(&self) -> &[(Host, u16)] {
        &self.hosts
    }

    fn bound(&self, host: &Host, port: u16) -> bool {
        self.hosts.iter().any(|(h, p)| h == host && *p == port)
    }

    fn bound_to_host(&self, host: &Host) -> bool {
        self.hosts.iter().any(|(h, _)| h == host)
    }
}

/// `pyexec_` and 48 hex digits from the system's random source.
fn placeholder() -> String {
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // A v4 uuid's digits 12 (version) and 16 (variant) are fixed: every kept digit is random.
    let digits: String = random
        .char_indices()
        .filter(|(i, _)| !matches!(i % 32, 12 | 16))
        .map(|(_, c)| c)
        .take(48)
        .collect();
    format!("{PLACEHOLDER_PREFIX}{digits}")
}

/// Why a request may not go where it is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak(pub String);

/// A text with values put in (`None`: it had no placeholder to replace), and which secrets
/// they were.
pub type Injected<'a> = (Option<Zeroizing<Vec<u8>>>, Vec<&'a str>);

/// Every secret of this server, and the authority that lets the proxy read their hosts'
/// requests.
pub struct Secrets {
    list: Vec<Secret>,
    authority: Authority,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl Secrets {
    /// The secrets, with a certificate authority made for their hosts. The process is made
    /// non-dumpable: no core file or ptrace of the same user reads the values.
    pub fn new(list: Vec<Secret>) -> Result<Self, String> {
        let mut hosts: Vec<Host> = Vec::new();
        for secret in &list {
            for (host, _) in &secret.hosts {
                if !hosts.contains(host) {
                    hosts.push(host.clone());
                }
            }
        }
        let authority = Authority::new(&hosts)?;
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) has no memory effects; it cannot fail with these
        // arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        Ok(Self { list, authority })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.list.iter()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `NAME=placeholder` for each secret: what a container's environment holds.
    pub fn env(&self) -> impl Iterator<Item = String> + '_ {
        self.list
            .iter()
            .map(|s| format!("{}={}", s.name, s.placeholder))
    }

    /// Whether some secret is bound to `host:port` (its tunnels are intercepted).
    pub fn bound(&self, host: &Host, port: u16) -> bool {
        self.list.iter().any(|s| s.bound(host, port))
    }

    /// The secret whose placeholder (in any letter case) is in `text`, if any.
    pub fn named_in(&self, text: &[u8]) -> Option<&str> {
        let lower = text.to_ascii_lowercase();
        self.list
            .iter()
            .find(|s| find(&lower, s.placeholder.as_bytes(), 0).is_some())
            .map(|s| s.name.as_str())
    }

    /// The first placeholder in `text` (any letter case) that may not go to `host:port`,
    /// as the reason to refuse; `plain` when the request is not encrypted (then even a
    /// secret bound to the host is not sent).
    pub fn leak(&self, text: &[u8], host: &Host, port: u16, plain: bool) -> Result<(), Leak> {
        let lower = text.to_ascii_lowercase();
        for secret in &self.list {
            if find(&lower, secret.placeholder.as_bytes(), 0).is_none() {
                continue;
            }
            if plain && secret.bound_to_host(host) {
                return Err(Leak(format!(
                    "secret {} is only sent over TLS",
                    secret.name
                )));
            }
            if !secret.bound(host, port) {
                return Err(Leak(format!(
                    "secret {} is bound to other hosts",
                    secret.name
                )));
            }
        }
        Ok(())
    }

    /// [`Secrets::leak`] over a request's line and headers (names and values).
    pub fn leak_in<B>(
        &self,
        request: &hyper::Request<B>,
        host: &Host,
        port: u16,
        plain: bool,
    ) -> Result<(), Leak> {
        let mut text = request.uri().to_string().into_bytes();
        for (name, value) in request.headers() {
            text.push(b'\n');
            text.extend_from_slice(name.as_str().as_bytes());
            text.push(b':');
            text.extend_from_slice(value.as_bytes());
        }
        self.leak(&text, host, port, plain)
    }

    /// A header's value with the placeholders of the secrets bound to `host:port` replaced by
    /// their values (exactly as written; another case is left as it is, which sends no
    /// value), and the names of the secrets injected. Refused when it holds a placeholder of a
    /// secret not bound there. `None`: nothing to replace.
    pub fn inject(&self, text: &[u8], host: &Host, port: u16) -> Result<Injected<'_>, Leak> {
        self.leak(text, host, port, false)?;
        let mut names = Vec::new();
        let mut out: Option<Zeroizing<Vec<u8>>> = None;
        for secret in self.list.iter().filter(|s| s.bound(host, port)) {
            let current: &[u8] = out.as_deref().map_or(text, |v| v.as_slice());
            if let Some(replaced) = replace(current, secret.placeholder.as_bytes(), &secret.value) {
                names.push(secret.name.as_str());
                out = Some(Zeroizing::new(replaced));
            }
        }
        Ok((out, names))
    }

    /// A request target (`/path?query`) with each query parameter whose value is exactly a
    /// bound secret's placeholder (`?key=…`, as APIs take keys) given the value instead;
    /// elsewhere in the target a placeholder stays as it is. Refused like [`Secrets::inject`].
    pub fn inject_query(&self, target: &str, host: &Host, port: u16) -> Result<Injected<'_>, Leak> {
        self.leak(target.as_bytes(), host, port, false)?;
        let Some((path, query)) = target.split_once('?') else {
            return Ok((None, Vec::new()));
        };
        let mut names = Vec::new();
        let mut out = Zeroizing::new(Vec::with_capacity(target.len() + 64));
        out.extend_from_slice(path.as_bytes());
        for (i, pair) in query.split('&').enumerate() {
            out.push(if i == 0 { b'?' } else { b'&' });
            let bound = pair.split_once('=').and_then(|(key, value)| {
                let secret = self
                    .list
                    .iter()
                    .find(|s| s.bound(host, port) && s.placeholder == value)?;
                Some((key, secret))
            });
            match bound {
                Some((key, secret)) => {
                    out.extend_from_slice(key.as_bytes());
                    out.push(b'=');
                    // As a query holds any value: `+`, `/` or `=` of a key stay what they are.
                    out.extend_from_slice(&percent_encoded(&secret.value));
                    names.push(secret.name.as_str());
                }
                None => out.extend_from_slice(pair.as_bytes()),
            }
        }
        Ok((if names.is_empty() { None } else { Some(out) }, names))
    }

    /// `text` with every secret's value (in any of its forms and letter cases) replaced by its
    /// placeholder (a bound host's answer), or `None` when it holds none.
    pub fn mask(&self, text: &[u8]) -> Option<Vec<u8>> {
        let (out, _) = self.scan(text, text.len());
        (out != text).then_some(out)
    }

    /// A streaming [`Secrets::mask`] for an answer's body.
    pub fn masker(self: &std::sync::Arc<Self>) -> Masker {
        Masker {
            secrets: self.clone(),
            carry: Vec::new(),
        }
    }

    /// Masks `buffer` left to right, up to `cut`: a value found (whole, in `buffer`) is
    /// replaced, even one that reaches past `cut`. What it made, and how far it read.
    fn scan(&self, buffer: &[u8], cut: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(buffer.len());
        let mut i = 0;
        'scan: while i < cut {
            let rest = &buffer[i..];
            for secret in &self.list {
                for form in &secret.forms {
                    if rest.len() >= form.len() && rest[..form.len()].eq_ignore_ascii_case(form) {
                        out.extend_from_slice(secret.placeholder.as_bytes());
                        i += form.len();
                        continue 'scan;
                    }
                }
            }
            out.push(rest[0]);
            i += 1;
        }
        (out, i)
    }
}

/// Masks values in a body that arrives in pieces. What a piece ends with may be the start of
/// a value the next piece completes, so the end of each piece waits for the next: always its
/// whole trailing run of visible ASCII (a value's every form is visible ASCII), up to
/// [`HELD`] bytes, whatever the value is. How much waits depends on the body alone, so the
/// way an answer is cut into pieces says nothing of the value.
pub struct Masker {
    secrets: std::sync::Arc<Secrets>,
    carry: Vec<u8>,
}

/// The most a masker holds back: the longest form any value may take (percent-encoded, 3
/// bytes a character), so no form can reach past it.
pub const HELD: usize = 3 * MAX_VALUE;

impl Masker {
    /// The next piece, masked; `last` flushes what was held back.
    pub fn feed(&mut self, piece: &[u8], last: bool) -> Vec<u8> {
        let mut buffer = std::mem::take(&mut self.carry);
        buffer.extend_from_slice(piece);
        let held = if last {
            0
        } else {
            let run = buffer
                .iter()
                .rev()
                .take_while(|b| (0x21..=0x7e).contains(*b))
                .count();
            run.min(HELD)
        };
        let (out, read) = self.secrets.scan(&buffer, buffer.len() - held);
        self.carry = buffer[read..].to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host::parse(name).unwrap()
    }

    fn secrets() -> Secrets {
        let value = |v: &str| Zeroizing::new(v.as_bytes().to_vec());
        Secrets::new(vec![
            Secret::new(
                "API_KEY",
                value("sk-live-123456"),
                vec![(host("api.example"), 443)],
            )
            .unwrap(),
            Secret::new(
                "OTHER",
                value("other-secret-value"),
                vec![(host("b.example"), 443)],
            )
            .unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn placeholders_are_long_random_and_token_shaped() {
        let (a, b) = (placeholder(), placeholder());
        assert_ne!(a, b);
        assert_eq!(a.len(), PLACEHOLDER_PREFIX.len() + 48);
        assert!(
            a[7..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_value_is_refused_at_start_without_being_shown() {
        let short = Secret::new("K", Zeroizing::new(b"abc".to_vec()), vec![]).unwrap_err();
        assert!(
            short.contains("secret K") && !short.contains("abc"),
            "{short}"
        );
        let spaced = Secret::new("K", Zeroizing::new(b"abc def ghi".to_vec()), vec![]).unwrap_err();
        assert!(
            spaced.contains("visible ASCII") && !spaced.contains("def"),
            "{spaced}"
        );
    }

    #[test]
    fn a_placeholder_is_swapped_only_for_its_own_host_and_refused_elsewhere() {
        let secrets = secrets();
        let [key, other] = [&secrets.list[0], &secrets.list[1]];
        let api = host("api.example");
        let header = format!("Bearer {}", key.placeholder);
        let (injected, names) = secrets.inject(header.as_bytes(), &api, 443).unwrap();
        assert_eq!(injected.unwrap().as_slice(), b"Bearer sk-live-123456");
        assert_eq!(names, ["API_KEY"]);
        // Another port of the same host, another host, a plain request, another case.
        for (to, port, plain) in [(&api, 8443, false), (&host("evil.example"), 443, false)] {
            let refused = secrets
                .leak(header.as_bytes(), to, port, plain)
                .unwrap_err();
            assert_eq!(refused.0, "secret API_KEY is bound to other hosts");
        }
        let plain = secrets.leak(header.as_bytes(), &api, 80, true).unwrap_err();
        assert_eq!(plain.0, "secret API_KEY is only sent over TLS");
        let upper = header.to_ascii_uppercase();
        assert!(
            secrets
                .leak(upper.as_bytes(), &host("evil.example"), 443, false)
                .is_err()
        );
        let (same, _) = secrets.inject(upper.as_bytes(), &api, 443).unwrap();
        assert!(same.is_none(), "another case sends no value");
        // The other secret's placeholder on its way to api.example.
        let both = format!("{} {}", key.placeholder, other.placeholder);
        let refused = secrets.inject(both.as_bytes(), &api, 443).unwrap_err();
        assert_eq!(refused.0, "secret OTHER is bound to other hosts");
    }

    #[test]
    fn in_a_url_only_a_query_value_that_is_the_placeholder_gets_the_value() {
        let secrets = secrets();
        let key = &secrets.list[0].placeholder;
        let api = host("api.example");
        let target = format!("/v1/{key}/x?a=1&key={key}&q=pre{key}");
        let (injected, names) = secrets.inject_query(&target, &api, 443).unwrap();
        let injected = String::from_utf8(injected.unwrap().to_vec()).unwrap();
        assert_eq!(
            injected,
            format!("/v1/{key}/x?a=1&key=sk-live-123456&q=pre{key}")
        );
        assert_eq!(names, ["API_KEY"]);
        assert_eq!(secrets.inject_query("/x?a=1", &api, 443).unwrap().0, None);
        let other = &secrets.list[1].placeholder;
        let refused = secrets.inject_query(&format!("/x?k={other}"), &api, 443);
        assert_eq!(
            refused.unwrap_err().0,
            "secret OTHER is bound to other hosts"
        );
    }

    #[test]
    fn values_are_masked_in_answers_even_across_pieces() {
        let secrets = std::sync::Arc::new(secrets());
        let placeholder = secrets.list[0].placeholder.clone();
        let body = b"{\"token\": \"sk-live-123456\", \"again\": \"sk-live-123456\"}";
        let expected = String::from_utf8_lossy(body).replace("sk-live-123456", &placeholder);
        for cut in 0..body.len() {
            let mut masker = secrets.masker();
            let mut out = masker.feed(&body[..cut], false);
            out.extend(masker.feed(&body[cut..], false));
            out.extend(masker.feed(&[], true));
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut at {cut}");
        }
        // Encoded, or in another case, as an echo may carry it.
        let forms = Secret::new("F", Zeroizing::new(b"ab/c+d=\"e".to_vec()), vec![]).unwrap();
        let secrets = std::sync::Arc::new(Secrets::new(vec![forms]).unwrap());
        let placeholder = secrets.list[0].placeholder.clone();
        for echo in [
            "ab/c+d=\"e",
            "AB/C+D=\"E",
            "ab%2Fc%2Bd%3D%22e",
            "ab%2fc%2bd%3d%22e",
            "ab/c+d=\\\"e",
            "ab\\/c+d=\\\"e",
        ] {
            let masked = secrets.mask(format!("<{echo}>").as_bytes()).unwrap();
            assert_eq!(
                String::from_utf8(masked).unwrap(),
                format!("<{placeholder}>"),
                "{echo}"
            );
        }
        let secrets = std::sync::Arc::new(self::secrets());
        let placeholder = secrets.list[0].placeholder.clone();
        // What waits depends on the body, not on the value: a guess at the value's start is
        // cut into pieces exactly as any other word.
        for guess in ["sk-li", "zk-li", "sk-live-12345"] {
            let mut masker = secrets.masker();
            assert_eq!(
                masker.feed(format!("hello {guess}").as_bytes(), false),
                b"hello "
            );
        }
        // Byte by byte; and a near-miss is given back whole.
        let mut masker = secrets.masker();
        let mut out = Vec::new();
        for b in b"sk-live-12345 sk-live-123456" {
            out.extend(masker.feed(&[*b], false));
        }
        out.extend(masker.feed(&[], true));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("sk-live-12345 {placeholder}")
        );
    }
}
