//! Who may call the server over HTTP: the bearer tokens (parsed from `--http-tokens` or
//! `PYEXEC_HTTP_TOKEN`, compared in constant time, never shown), what each may do beyond
//! running code (`Grants`), and the owner a request is known by once its token is accepted
//! (`TokenOwner`: a digest, never the token). A leaf: the transport sets the owner, the tools
//! read it, neither knows the other.

use std::path::Path;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The tokens that may call the server (empty only with `--http-insecure-no-auth`), each
/// with what it may do beyond running code.
#[derive(Default)]
pub struct Tokens(Vec<Token>);

/// One accepted token.
struct Token {
    secret: Vec<u8>,
    /// May call `install_packages`: the environment it changes is every token's.
    may_install: bool,
}

/// What a token may do beyond running code, once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// `install_packages`.
    pub install: bool,
}

/// The permission a tokens file line may give after its token.
const INSTALL_GRANT: &str = "install";

/// Shows how many tokens there are, never the tokens.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from a file: one per line, optionally followed by the permissions it has
    /// (`install`: it may call install_packages); blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let token = words.next().unwrap_or_default();
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "line {}: a token must be at least 16 characters with no spaces \
                     (e.g. `openssl rand -hex 32`)",
                    number + 1
                ));
            }
            let mut may_install = false;
            for word in words {
                if word != INSTALL_GRANT {
                    // The word is not echoed: a line with a stray space may hold a secret.
                    return Err(format!(
                        "line {}: after the token, the only permission a line may give is \
                         `{INSTALL_GRANT}` (it may call install_packages)",
                        number + 1
                    ));
                }
                may_install = true;
            }
            tokens.push(Token {
                secret: token.as_bytes().to_vec(),
                may_install,
            });
        }
        Ok(Self(tokens))
    }

    /// One token (`PYEXEC_HTTP_TOKEN`): one tenant, who may install.
    pub fn single(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.split_ascii_whitespace().count() != 1 {
            return Err("PYEXEC_HTTP_TOKEN must hold exactly one token".to_string());
        }
        let mut tokens = Self::parse(token)?;
        for token in &mut tokens.0 {
            token.may_install = true;
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `presented` is one of the tokens; every token is compared, in constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.grants(presented).is_some()
    }

    /// What `presented` may do, if it is one of the tokens; every token is compared, in
    /// constant time.
    pub fn grants(&self, presented: &[u8]) -> Option<Grants> {
        let mut found = subtle::Choice::from(0);
        let mut install = subtle::Choice::from(0);
        for token in &self.0 {
            let same = token.secret.as_slice().ct_eq(presented);
            found |= same;
            install |= same & subtle::Choice::from(u8::from(token.may_install));
        }
        bool::from(found).then(|| Grants {
            install: install.into(),
        })
    }
}

/// Reads a tokens file.
pub fn read_tokens(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "--http-tokens {}: {e}; give a file with one token per line",
            path.display()
        )
    })?;
    Tokens::parse(&text).map_err(|e| anyhow::anyhow!("--http-tokens {}: {e}", path.display()))
}

/// Who presented an accepted token: a digest of it (never the token), which owns the
/// sessions made with it, and what the token may do. Put in the request's extensions for the
/// tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner(pub String, pub Grants);

impl TokenOwner {
    pub fn of(token: &[u8], grants: Grants) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token);
        Self(digest.iter().map(|b| format!("{b:02x}")).collect(), grants)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_comments_and_refuse_weak_ones() {
        let tokens =
            Tokens::parse("# team\n\nalice-0123456789abcdef\n  bob-0123456789abcdef  \n").unwrap();
        assert!(tokens.accepts(b"alice-0123456789abcdef"));
        assert!(tokens.accepts(b"bob-0123456789abcdef"));
        assert!(!tokens.accepts(b"alice-0123456789abcde"));
        assert!(!tokens.accepts(b""));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("has a space in it 0123456789\n").is_err());
        let error = Tokens::parse("alice-0123456789abcdef sEcReT-half\n").unwrap_err();
        assert!(!error.contains("sEcReT"), "never echoed: {error}");
        assert!(Tokens::single("a-0123456789abcdef\nb-0123456789abcdef").is_err());
        assert_eq!(
            format!("{tokens:?}"),
            "Tokens(2 configured)",
            "never the tokens"
        );
    }

    #[test]
    fn a_token_may_install_only_when_its_line_says_so_or_it_is_the_only_one() {
        let tokens = Tokens::parse(
            "alice-0123456789abcdef install\nbob-0123456789abcdef\ncarol-0123456789abcdef  install  install\n",
        )
        .unwrap();
        let may = |t: &str| tokens.grants(t.as_bytes()).map(|g| g.install);
        assert_eq!(may("alice-0123456789abcdef"), Some(true));
        assert_eq!(may("bob-0123456789abcdef"), Some(false));
        assert_eq!(may("carol-0123456789abcdef"), Some(true));
        assert_eq!(may("install"), None, "a permission is not a token");
        assert_eq!(may("mallory-0123456789abcdef"), None);
        let single = Tokens::single("solo-0123456789abcdef").unwrap();
        assert_eq!(
            single.grants(b"solo-0123456789abcdef"),
            Some(Grants { install: true })
        );
        assert!(Tokens::single("solo-0123456789abcdef install").is_err());
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
