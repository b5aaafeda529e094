//! Egress: letting code reach named hosts through the server's own proxy, and nothing else.
//! (Work in progress: the pure rules come first.)
//!
//! - `rules`: the allowlist's patterns and the decision "may this host and port be reached";
//! - `address`: the addresses a name may not lead to (the host, private networks, metadata);
//! - `ledger`: what a call tried, its byte budget and connection cap;
//! - `proxy`: CONNECT tunnels and plain-HTTP forwarding, decided and counted per call;
//! - `sni`: the name a tunnel's TLS ClientHello asks for, read without joining the handshake.

mod address;
mod ledger;
mod proxy;
mod rules;
mod sni;

pub use address::forbidden;
pub use ledger::{Attempt, Ledger, MAX_ENTRIES, Verdict};
pub use proxy::{Policy, Proxy};
pub use rules::{Allowlist, DEFAULT_PORTS, Host, PatternError, Rule};
pub use sni::{Hello, HelloReader, MAX_HELLO};
