//! The HTTP listener's own accept loop: what a peer can hold before it has shown a token is
//! bounded here, below authentication, because anyone who can reach the port can open
//! connections.
//!
//! It owns the open-connection caps (in all, and per peer address: an IPv4 address, an IPv6
//! /64), the size of a request head (64 KiB), the header read timeout (which also ends idle keep-alive connections: hyper starts it
//! whenever a connection waits for a request head), the soft `RLIMIT_NOFILE` raised to the
//! hard limit, accept errors backed off instead of spun on, and a bounded graceful shutdown.
//! A connection over a cap is answered `503` at once from the accept loop and closed: no task
//! and no descriptor outlive the refusal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::metrics::{Metrics, Refused};
use crate::settings::ConnectionLimits;

/// How long a connection may take to send a whole request head, and how long an idle
/// keep-alive connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for responses in flight before it drops the connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the accept loop sleeps after an error such as EMFILE, so descriptors can free up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The largest request head (request line and headers) hyper reads: what a request carries
/// into the tools (its headers stay with the call while it waits) is bounded too.
const MAX_HEAD: usize = 64 << 10;

/// Descriptors kept for everything but HTTP connections (Docker, files, the pool).
const FD_RESERVE: u64 = 256;

/// The fewest connections the cap is ever lowered to.
const MIN_OPEN: usize = 16;

impl ConnectionLimits {
    /// The caps with `max_open` lowered, if need be, to what `open_files` (the soft
    /// `RLIMIT_NOFILE` in force) leaves after the descriptors the rest of the server needs.
    pub fn fitted_to(self, open_files: u64) -> Self {
        let room = usize::try_from(open_files.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let max_open = self.max_open.min(room.max(MIN_OPEN));
        Self {
            max_open,
            max_per_peer: self.max_per_peer.min(max_open),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go programs do at start) and
/// answers the soft limit then in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// What one peer is counted as: its IPv4 address, or the /64 of its IPv6 address (one host
/// commonly holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

/// Open connections, in all and per peer.
#[derive(Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One accepted connection's place in [`Open`], given back when dropped.
struct Place {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
    metrics: Arc<Metrics>,
}

impl Place {
    /// A place for a connection from `peer`, or which cap refuses it.
    fn take(
        open: &Arc<Mutex<Open>>,
        peer: IpAddr,
        limits: ConnectionLimits,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, Refused> {
        let mut state = open.lock().unwrap_or_else(|e| e.into_inner());
        if state.total >= limits.max_open {
            return Err(Refused::OpenLimit);
        }
        let count = state.per_peer.entry(peer).or_default();
        if *count >= limits.max_per_peer {
            return Err(Refused::PeerLimit);
        }
        *count += 1;
        state.total += 1;
        metrics.http_open(state.total);
        Ok(Self {
            open: open.clone(),
            peer,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.open.lock().unwrap_or_else(|e| e.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                state.per_peer.remove(&self.peer);
            }
        }
        self.metrics.http_open(state.total);
    }
}

/// Answers a refused connection from the accept loop without waiting on it: what the peer
/// already sent is read (so the close is a FIN, not a reset that could hide the answer), the
/// answer goes to the socket's send buffer, and the socket is closed.
fn refuse(stream: tokio::net::TcpStream, why: Refused) {
    let body = match why {
        Refused::OpenLimit => "the server has too many open connections; retry shortly\n",
        Refused::PeerLimit => "too many open connections from your address; close some first\n",
    };
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(answer.as_bytes());
}

/// Whether an accept error means the process or system is out of descriptors or memory, so
/// accepting again at once would only fail again.
fn is_resource_error(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A failed accept: backs off when the process is out of descriptors or memory (the next
/// accept would fail the same way at once), else only says so.
async fn accept_failed(error: &std::io::Error) {
    if is_resource_error(error) {
        tracing::warn!(%error, "cannot accept a connection; retrying in 100 ms");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    } else {
        tracing::debug!(%error, "accept failed");
    }
}

/// Serves `router` over HTTP/1.1 on `listener` within `limits` until `shutdown` resolves;
/// then stops accepting, calls `stopping` (which ends long-lived responses), and waits up to
/// [`SHUTDOWN_GRACE`] for the connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    stopping: impl FnOnce(),
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(&error).await;
                continue;
            }
        };
        let place = match Place::take(&open, peer_key(peer.ip()), limits, &metrics) {
            Ok(place) => place,
            Err(why) => {
                metrics.http_refused(why);
                tracing::debug!(reason = ?why, "connection refused");
                refuse(stream, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended");
            }
            drop(place);
        });
    }
    drop(listener);
    stopping();
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 10 s of shutdown; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest_of_the_server() {
        let limits = ConnectionLimits {
            max_open: 512,
            max_per_peer: 64,
        };
        assert_eq!(limits.fitted_to(1 << 20), limits);
        assert_eq!(
            limits.fitted_to(512),
            ConnectionLimits {
                max_open: 256,
                max_per_peer: 64
            }
        );
        let tiny = limits.fitted_to(64);
        assert_eq!((tiny.max_open, tiny.max_per_peer), (MIN_OPEN, MIN_OPEN));
    }

    #[test]
    fn a_peer_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(peer_key(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(peer_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(peer_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            peer_key(ip("2001:db8:1:2:ffff::1")),
            peer_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:3::1")),
            peer_key(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn places_are_counted_per_peer_and_given_back() {
        let open = Arc::new(Mutex::new(Open::default()));
        let metrics = Arc::new(Metrics::default());
        let limits = ConnectionLimits {
            max_open: 3,
            max_per_peer: 2,
        };
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = Place::take(&open, a, limits, &metrics).unwrap();
        let _second = Place::take(&open, a, limits, &metrics).unwrap();
        assert_eq!(
            Place::take(&open, a, limits, &metrics).err(),
            Some(Refused::PeerLimit)
        );
        let _third = Place::take(&open, b, limits, &metrics).unwrap();
        assert_eq!(
            Place::take(&open, b, limits, &metrics).err(),
            Some(Refused::OpenLimit)
        );
        drop(first);
        assert!(Place::take(&open, a, limits, &metrics).is_ok());
        assert!(open.lock().unwrap().per_peer.len() <= 2);
    }
}
