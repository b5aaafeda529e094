//! Name lookups for the proxy, bounded. The system resolver blocks a thread until it answers
//! or gives up (with `timeout:30 attempts:2` in resolv.conf, a minute), far past the proxy's
//! own wait: a program asking for many names while DNS is slow would otherwise pile up the
//! server's blocking threads, then every other call's lookups would wait behind them. So a
//! lookup holds a place of its call's (at most [`PER_CALL`]) and of the server's (at most
//! [`IN_SERVER`]) until its thread returns, not until the proxy stops waiting. And the
//! decision on what a name led to: no address the allowlist does not reach ([`admit`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::address::{forbidden, private_network, this_machine};
use super::rules::{Allowlist, Host};

/// Lookups one call may have running at once.
pub const PER_CALL: usize = 8;
/// Lookups the whole server may have running at once (tokio's blocking pool holds 512).
pub const IN_SERVER: usize = 64;

static LOOKUPS: Semaphore = Semaphore::const_new(IN_SERVER);

/// A call's own lookup places.
pub(super) fn places() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(PER_CALL))
}

/// The addresses `host:port` may be reached at under `allow` (`private`: names may lead to
/// private networks), looked up with `lookup` (the call's places, the wait); or why not.
pub(super) async fn admit(
    allow: &Allowlist,
    private: bool,
    host: &Host,
    port: u16,
    lookup: (&Arc<Semaphore>, Duration),
) -> Result<Vec<SocketAddr>, String> {
    if allow.allowing(host, port).is_none() {
        return Err("not in the allowlist".to_string());
    }
    let addresses: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => resolve(name, port, lookup.0, lookup.1).await?,
    };
    for address in &addresses {
        let ip = address.ip();
        if let Some(why) = forbidden(ip)
            && !(private && private_network(ip))
            && !allow.names_address(ip)
        {
            return Err(format!("{host} resolves to {ip}, {why}"));
        }
        // The host's own addresses (docker0, its LAN address, a public one) lead to its
        // services, whatever kind of address they are.
        if this_machine(ip) && !allow.names_address(ip) {
            return Err(format!(
                "{host} resolves to {ip}, an address of this machine"
            ));
        }
    }
    Ok(addresses)
}

/// The addresses of `name`, within `wait`; or why not.
async fn resolve(
    name: &str,
    port: u16,
    mine: &Arc<Semaphore>,
    wait: Duration,
) -> Result<Vec<SocketAddr>, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let busy = || format!("{name} does not resolve: too many name lookups are still running");
    let own = tokio::time::timeout_at(deadline, mine.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let shared = tokio::time::timeout_at(deadline, LOOKUPS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let asked = name.to_string();
    let lookup = tokio::task::spawn_blocking(move || {
        // Held until the resolver returns, however long after the proxy stopped waiting.
        let _places = (own, shared);
        (asked.as_str(), port)
            .to_socket_addrs()
            .map(|found| found.collect::<Vec<_>>())
    });
    match tokio::time::timeout_at(deadline, lookup).await {
        Ok(Ok(Ok(found))) if !found.is_empty() => Ok(found),
        _ => Err(format!("{name} does not resolve")),
    }
}
