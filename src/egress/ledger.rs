//! What one call's programs tried to reach, as the call reports it (host, port, verdict,
//! reason, connections, bytes), bounded in entries; the byte budget and the connection cap
//! it keeps; and [`Metered`], an upstream socket that counts into it and fails past the
//! budget.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::rules::Host;

/// Distinct hosts a ledger lists; attempts past them are counted, not listed.
pub const MAX_ENTRIES: usize = 256;
/// Allowed or blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Blocked,
}

/// One host and port a call tried, as the call reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Attempt {
    /// The host the program asked for, as it asked.
    pub host: String,
    pub port: u16,
    /// Whether the proxy let it through.
    pub verdict: Verdict,
    /// Why it was refused (or cut at the byte limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Connections made (allowed) or attempts refused (blocked).
    pub connections: u64,
    /// Bytes the program sent to the host.
    pub bytes_sent: u64,
    /// Bytes the host sent back.
    pub bytes_received: u64,
    /// The secrets the proxy put into requests to this host (`--secret`), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// What one call's programs tried, and what they used of their budget.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The entries of the current call, and which call that is (a session's ledger is taken
    /// after each call: bytes of a connection opened in an earlier call count in the total
    /// but go to no entry of the new call's).
    attempts: Mutex<(u64, Vec<Attempt>)>,
    /// Attempts past [`MAX_ENTRIES`] distinct ones.
    unlisted: AtomicU64,
    /// Bytes in and out, all connections together.
    bytes: AtomicU64,
    /// Connections open now.
    open: AtomicUsize,
    /// Set once the byte budget was passed: the cut connection's entry says so, and no new
    /// connection is opened in this call.
    spent: std::sync::atomic::AtomicBool,
}

/// A listed entry: the call it belongs to and its index there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    generation: u64,
    index: usize,
}

/// The reason an allowed entry gets when its connection is cut at the byte budget.
pub const CUT: &str = "cut: the call's egress byte limit (--egress-max-bytes) was reached";

impl Ledger {
    /// What was tried, in the order first tried.
    pub fn report(&self) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// What was tried since the last take, and a fresh start for the next call: its entries,
    /// its byte budget and its unlisted count begin again (a session's calls each report
    /// their own).
    pub fn take(&self) -> Vec<Attempt> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.0 += 1;
        self.bytes.store(0, Ordering::Relaxed);
        self.unlisted.store(0, Ordering::Relaxed);
        self.spent.store(false, Ordering::Relaxed);
        std::mem::take(&mut attempts.1)
    }

    /// Whether this call's byte budget is spent.
    pub fn spent(&self) -> bool {
        self.spent.load(Ordering::Relaxed)
    }

    /// Attempts not listed (past [`MAX_ENTRIES`]).
    pub fn unlisted(&self) -> u64 {
        self.unlisted.load(Ordering::Relaxed)
    }

    /// Counts an attempt; returns its entry's index when it is listed.
    pub(super) fn note(
        &self,
        host: &Host,
        port: u16,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> Option<Entry> {
        let host = host.to_string();
        let mut guard = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let generation = guard.0;
        let attempts = &mut guard.1;
        let found = attempts.iter().position(|a| {
            a.host == host
                && a.port == port
                && a.verdict == verdict
                && a.reason.as_deref() == reason
        });
        let index = match found {
            Some(index) => index,
            None if attempts.len() < MAX_ENTRIES => {
                attempts.push(Attempt {
                    host,
                    port,
                    verdict,
                    reason: reason.map(str::to_string),
                    connections: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    secrets: Vec::new(),
                });
                attempts.len() - 1
            }
            None => {
                self.unlisted.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        attempts[index].connections += 1;
        Some(Entry { generation, index })
    }

    /// Bytes left of a budget of `max`.
    pub(super) fn left(&self, max: u64) -> u64 {
        max.saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// Adds bytes to an entry and to the total.
    pub(super) fn count(&self, entry: Option<Entry>, sent: u64, received: u64) {
        self.bytes.fetch_add(sent + received, Ordering::Relaxed);
        self.with_entry(entry, |attempt| {
            attempt.bytes_sent += sent;
            attempt.bytes_received += received;
        });
    }

    /// The secret `name` was put into a request of `entry`'s.
    pub(super) fn inject(&self, entry: Option<Entry>, name: &str) {
        self.with_entry(entry, |attempt| {
            if !attempt.secrets.iter().any(|s| s == name) {
                attempt.secrets.push(name.to_string());
            }
        });
    }

    /// The budget is spent: the connection of `entry` is cut (its entry says so), and no new
    /// one is opened in this call.
    pub(super) fn cut(&self, entry: Option<Entry>) {
        self.spent.store(true, Ordering::Relaxed);
        self.with_entry(entry, |attempt| {
            attempt.reason.get_or_insert_with(|| CUT.to_string());
        });
    }

    fn with_entry(&self, entry: Option<Entry>, change: impl FnOnce(&mut Attempt)) {
        let Some(entry) = entry else { return };
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.0 == entry.generation
            && let Some(attempt) = attempts.1.get_mut(entry.index)
        {
            change(attempt);
        }
    }
}

/// Entries the egress line names; the rest are counted (all are in the structured answer).
const EGRESS_LINE_ENTRIES: usize = 4;

/// One short line on what a call tried through the egress proxy (the answer's text, `exec`'s
/// stderr), or `None` when it tried nothing.
pub fn summary(attempts: &[Attempt]) -> Option<String> {
    if attempts.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = attempts
        .iter()
        .take(EGRESS_LINE_ENTRIES)
        .map(|a| match (a.verdict, &a.reason) {
            (Verdict::Blocked, reason) => format!(
                "{}:{} blocked ({})",
                a.host,
                a.port,
                reason.as_deref().unwrap_or("refused")
            ),
            (Verdict::Allowed, reason) => format!(
                "{}:{} allowed ({} connection{}, {} sent, {} received{}{})",
                a.host,
                a.port,
                a.connections,
                if a.connections == 1 { "" } else { "s" },
                bytes(a.bytes_sent),
                bytes(a.bytes_received),
                if a.secrets.is_empty() {
                    String::new()
                } else {
                    format!(", secret {} injected", a.secrets.join(", "))
                },
                reason
                    .as_deref()
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            ),
        })
        .collect();
    if attempts.len() > EGRESS_LINE_ENTRIES {
        parts.push(format!("{} more", attempts.len() - EGRESS_LINE_ENTRIES));
    }
    Some(format!("egress: {}", parts.join("; ")))
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A connection's place under `max_connections`, given back when dropped.
pub(super) struct Open(Arc<Ledger>);

impl Open {
    pub(super) fn take(ledger: &Arc<Ledger>, max: usize) -> Option<Self> {
        let taken = ledger
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.is_ok().then(|| Self(ledger.clone()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An upstream socket whose bytes are counted in the ledger; past the budget it fails. Every
/// byte moved stamps `touched` (seconds on [`clock`]), which the idle timeout reads.
pub(super) struct Metered {
    pub(super) inner: TcpStream,
    pub(super) ledger: Arc<Ledger>,
    pub(super) entry: Option<Entry>,
    pub(super) max: u64,
    pub(super) touched: Arc<AtomicU64>,
}

/// Seconds since the first call, a clock cheap enough to read on every read and write.
pub(super) fn clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
}

fn spent() -> std::io::Error {
    std::io::Error::other("egress byte limit reached")
}

impl Metered {
    /// What is left of the budget, or the error that cuts the connection when nothing is.
    fn allowance(&self) -> std::io::Result<usize> {
        match self.ledger.left(self.max) {
            0 => {
                self.ledger.cut(self.entry);
                Err(spent())
            }
            left => Ok(usize::try_from(left).unwrap_or(usize::MAX)),
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let allowance = self.allowance()?;
        // Never more than the budget allows: the limit is exact, not one buffer late.
        let mut limited = buf.take(allowance.min(buf.remaining()));
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let read = limited.filled().len();
        // SAFETY: `limited` views `buf`'s unfilled part, and the inner reader filled (so
        // initialised) its first `read` bytes.
        unsafe { buf.assume_init(read) };
        buf.advance(read);
        if read > 0 {
            self.touched.store(clock(), Ordering::Relaxed);
            self.ledger.count(self.entry, 0, read as u64);
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let allowance = self.allowance()?;
        let data = &data[..allowance.min(data.len())];
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = polled {
            self.touched.store(clock(), Ordering::Relaxed);
            self.ledger.count(self.entry, written as u64, 0);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(host: &str, verdict: Verdict, reason: Option<&str>) -> Attempt {
        Attempt {
            host: host.to_string(),
            port: 443,
            verdict,
            reason: reason.map(str::to_string),
            connections: 2,
            bytes_sent: 900,
            bytes_received: 3 << 20,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn the_summary_is_one_line_naming_four_entries_and_counting_the_rest() {
        assert_eq!(summary(&[]), None);
        let mut attempts = vec![
            attempt("api.github.com", Verdict::Allowed, None),
            attempt(
                "evil.example",
                Verdict::Blocked,
                Some("not in the allowlist"),
            ),
        ];
        assert_eq!(
            summary(&attempts).unwrap(),
            "egress: api.github.com:443 allowed (2 connections, 900 B sent, 3.0 MiB received); \
             evil.example:443 blocked (not in the allowlist)"
        );
        for n in 0..5 {
            attempts.push(attempt(&format!("h{n}.example"), Verdict::Blocked, None));
        }
        let line = summary(&attempts).unwrap();
        assert!(line.ends_with("; 3 more"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_taken_ledger_starts_again_and_late_bytes_of_an_old_entry_go_nowhere() {
        let ledger = Ledger::default();
        let host = Host::parse("a.example").unwrap();
        let old = ledger.note(&host, 443, Verdict::Allowed, None);
        ledger.count(old, 10, 20);
        assert_eq!(ledger.take()[0].bytes_received, 20);
        let new = ledger.note(&host, 80, Verdict::Allowed, None);
        ledger.count(old, 5, 5);
        ledger.count(new, 1, 1);
        let report = ledger.report();
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].port, report[0].bytes_sent), (80, 1));
        assert_eq!(
            ledger.left(100),
            100 - 12,
            "the budget counts every byte of the call"
        );
    }
}
