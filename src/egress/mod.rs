//! Egress: letting code reach named hosts through the server's own proxy, and nothing else.
//! A container with an allowlist still has no network: its one way out is a Unix socket of
//! this server's, served by a proxy of its own that decides every connection on the name the
//! program asked for and reports what the call tried.
//!
//! - `endpoint`: one container's socket, folder and proxy, ended with its container;
//! - `rules`: the allowlist's patterns and the decision "may this host and port be reached";
//! - `address`: the addresses a name may not lead to (the host, private networks, metadata);
//! - `ledger`: what a call tried, its byte budget and connection cap;
//! - `proxy`: CONNECT tunnels and plain-HTTP forwarding, decided and counted per call;
//! - `resolve`: name lookups, bounded per call and in the server;
//! - `headers`: a plain request's `Host` checked, hop-by-hop headers kept from the host;
//! - `sni`: the name a tunnel's TLS ClientHello asks for, read without joining the handshake;
//! - `secrets`: the credentials the proxy injects for their hosts (`--secret`): placeholders
//!   found, values put in and masked out;
//! - `authority`: the certificates that let the proxy read a bound host's requests, and the
//!   roots real hosts are verified against;
//! - `intercept`: a bound host's tunnel, opened: requests rewritten, answers masked;
//! - `reply`: the proxy's own answers (refusals, failures);
//! - `text`: byte-string search and replace, and the encodings a value is masked in;
//! - `tunnel`: a tunnel's opening (the ClientHello checked, or a host that speaks first) and
//!   the idle timeout.

mod address;
mod authority;
mod endpoint;
mod headers;
mod intercept;
mod ledger;
mod proxy;
mod reply;
mod resolve;
mod rules;
mod secrets;
mod sni;
mod text;
mod tunnel;

pub use address::{forbidden, private_network, this_machine};
pub use endpoint::{CA_BUNDLE, Endpoint, SOCKET};
pub use ledger::{Attempt, CUT, Ledger, MAX_ENTRIES, Verdict, summary};
pub use proxy::{Policy, Proxy};
pub use rules::{Allowlist, DEFAULT_PORTS, Host, PatternError, Rule};
pub use secrets::{MAX_VALUE, MIN_VALUE, PLACEHOLDER_PREFIX, Secret, Secrets};
pub use sni::{Hello, HelloReader, MAX_HELLO};
pub use tunnel::IDLE;
