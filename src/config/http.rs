//! The HTTP transport's flags (`HttpArgs`): address, tokens, allowed origins and hosts,
//! connection caps; resolved into [`HttpSettings`], refusing to serve other machines without
//! a token.

use std::time::Duration;

use clap::Args;

use crate::settings::HttpSettings;

/// Serving MCP over Streamable HTTP instead of stdio, for several clients at once.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Serve MCP over Streamable HTTP at /mcp on this address instead of stdio
    /// (default address when given without one: 127.0.0.1:8808)
    #[arg(long, global = true, env = "PYEXEC_HTTP", value_name = "ADDR", num_args = 0..=1,
          default_missing_value = crate::settings::DEFAULT_ADDR)]
    pub http: Option<String>,

    /// The one bearer token clients must send (prefer the variable: flags show in `ps`)
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub http_token: Option<String>,

    /// File of bearer tokens, one per line (`#` comments allowed), reread on SIGHUP
    #[arg(long, global = true, env = "PYEXEC_HTTP_TOKENS", value_name = "FILE")]
    pub http_tokens: Option<std::path::PathBuf>,

    /// Serve HTTP without authentication (loopback addresses only)
    #[arg(long, global = true, env = "PYEXEC_HTTP_INSECURE_NO_AUTH")]
    pub http_insecure_no_auth: bool,

    /// Browser origins allowed to call (e.g. https://app.example.com:443); default: loopback
    /// origins only. Comma-separated in the variable
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub http_allowed_origin: Vec<String>,

    /// Host names clients reach the server by (DNS-rebinding defence); default: loopback
    /// names. Comma-separated in the variable
    #[arg(
        long,
        global = true,
        env = "PYEXEC_HTTP_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub http_allowed_host: Vec<String>,

    /// Seconds an idle HTTP session lives (60-86400)
    #[arg(long, global = true, env = "PYEXEC_HTTP_SESSION_IDLE", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..=86400))]
    pub http_session_idle: u64,

    /// Open HTTP connections in all, before authentication (lowered to fit the open-files
    /// limit); beyond it a connection is answered 503 and closed
    #[arg(long, global = true, env = "PYEXEC_HTTP_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,

    /// Open HTTP connections from one address (an IPv6 /64 counts as one); behind a reverse
    /// proxy every client is the proxy's address, so raise it there
    #[arg(long, global = true, env = "PYEXEC_HTTP_MAX_CONNECTIONS_PER_PEER",
          default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections_per_peer: u64,
}

impl HttpArgs {
    /// The HTTP settings when `--http` is given: refuses to serve without a token unless
    /// told to, and never without one on an address other machines can reach.
    pub fn resolve(&self, max_input: usize) -> anyhow::Result<Option<HttpSettings>> {
        use std::sync::{Arc, RwLock};
        let Some(addr) = &self.http else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "--http (PYEXEC_HTTP) `{addr}` is not an address; use e.g. 127.0.0.1:8808"
            )
        })?;
        let tokens = self.tokens(&addr)?;
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        hosts.extend(self.http_allowed_host.iter().cloned());
        let origins = if self.http_allowed_origin.is_empty() {
            ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .to_vec()
        } else {
            self.http_allowed_origin.clone()
        };
        Ok(Some(HttpSettings {
            addr,
            tokens: (!tokens.is_empty()).then(|| Arc::new(RwLock::new(tokens))),
            tokens_file: self.http_tokens.clone(),
            allowed_origins: origins,
            allowed_hosts: hosts,
            session_idle: Duration::from_secs(self.http_session_idle),
            connections: crate::settings::ConnectionLimits {
                max_open: self.http_max_connections as usize,
                max_per_peer: self.http_max_connections_per_peer as usize,
            },
            // A request is the code and input plus JSON framing and escaping.
            max_body: max_input * 2 + (64 << 10),
        }))
    }
    /// The tokens from `PYEXEC_HTTP_TOKEN` or `--http-tokens` (never both); none only on a
    /// loopback address and with `--http-insecure-no-auth`.
    fn tokens(&self, addr: &std::net::SocketAddr) -> anyhow::Result<crate::auth::Tokens> {
        let mut tokens = crate::auth::Tokens::default();
        if let Some(token) = &self.http_token {
            tokens = crate::auth::Tokens::single(token)
                .map_err(|e| anyhow::anyhow!("PYEXEC_HTTP_TOKEN: {e}"))?;
        }
        if let Some(file) = &self.http_tokens {
            if !tokens.is_empty() {
                anyhow::bail!("give PYEXEC_HTTP_TOKEN or --http-tokens, not both");
            }
            tokens = crate::auth::read_tokens(file)?;
        }
        if tokens.is_empty() {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "--http {addr} is reachable from other machines: set PYEXEC_HTTP_TOKEN or \
                     --http-tokens (serving without authentication is for loopback only)"
                );
            }
            if !self.http_insecure_no_auth {
                anyhow::bail!(
                    "--http needs a token: set PYEXEC_HTTP_TOKEN or --http-tokens FILE, or pass \
                     --http-insecure-no-auth to serve this loopback address without one"
                );
            }
        }
        Ok(tokens)
    }
}
