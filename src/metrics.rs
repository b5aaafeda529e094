//! Counters an operator watches, kept with atomics on the call path and rendered in the
//! Prometheus text format for `GET /metrics`: executions by outcome and their durations,
//! warm-pool hits and misses, installs by outcome, containers the reaper removed, HTTP
//! connections open and refused. Gauges (queue depth, busy slots, warm containers) are read
//! from the sandbox when rendered. A leaf: it imports nothing of the crate, and the text is
//! rendered in three flat parts (executions, gauges, counters).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// How an execution ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Oom,
    Cancelled,
}

const OUTCOMES: [(Outcome, &str); 5] = [
    (Outcome::Ok, "ok"),
    (Outcome::Error, "error"),
    (Outcome::Timeout, "timeout"),
    (Outcome::Oom, "oom"),
    (Outcome::Cancelled, "cancelled"),
];

/// Which cap refused an HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The open connections in all.
    OpenLimit,
    /// The open connections from the peer's address.
    PeerLimit,
}

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// The counters.
#[derive(Default)]
pub struct Metrics {
    executions: [AtomicU64; 5],
    /// Cumulative counts per bucket, then +Inf.
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_ms: AtomicU64,
    pool_hits: AtomicU64,
    pool_misses: AtomicU64,
    installs_ok: AtomicU64,
    installs_failed: AtomicU64,
    reaped: AtomicU64,
    http_open: AtomicU64,
    http_refused_open: AtomicU64,
    http_refused_peer: AtomicU64,
    egress_allowed: AtomicU64,
    egress_blocked: AtomicU64,
    egress_sent: AtomicU64,
    egress_received: AtomicU64,
}

/// The gauges, read when rendering.
pub struct Gauges {
    pub queue_depth: usize,
    pub queue_bytes: usize,
    pub busy_slots: usize,
    pub warm_containers: usize,
    pub sessions_open: usize,
}

impl Metrics {
    /// Counts one execution that ended as `outcome` after `duration_ms`.
    pub fn execution(&self, outcome: Outcome, duration_ms: u64) {
        let index = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(1);
        self.executions[index].fetch_add(1, Ordering::Relaxed);
        let seconds = duration_ms as f64 / 1000.0;
        for (bucket, bound) in self.duration_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_buckets[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_ms
            .fetch_add(duration_ms, Ordering::Relaxed);
    }

    pub fn pool(&self, hit: bool) {
        let counter = if hit {
            &self.pool_hits
        } else {
            &self.pool_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn install(&self, ok: bool) {
        let counter = if ok {
            &self.installs_ok
        } else {
            &self.installs_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reaped(&self, count: usize) {
        self.reaped.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// The HTTP connections open now.
    pub fn http_open(&self, open: usize) {
        self.http_open.store(open as u64, Ordering::Relaxed);
    }

    /// Counts one HTTP connection refused by a cap.
    pub fn http_refused(&self, why: Refused) {
        let counter = match why {
            Refused::OpenLimit => &self.http_refused_open,
            Refused::PeerLimit => &self.http_refused_peer,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what one call tried through the egress proxy: connections allowed, attempts
    /// blocked, bytes each way.
    pub fn egress(&self, attempts: &[crate::egress::Attempt]) {
        for attempt in attempts {
            let counter = match attempt.verdict {
                crate::egress::Verdict::Allowed => &self.egress_allowed,
                crate::egress::Verdict::Blocked => &self.egress_blocked,
            };
            counter.fetch_add(attempt.connections, Ordering::Relaxed);
            self.egress_sent
                .fetch_add(attempt.bytes_sent, Ordering::Relaxed);
            self.egress_received
                .fetch_add(attempt.bytes_received, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of everything: executions, gauges, then counters.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        self.render_executions(&mut out);
        self.render_gauges(&mut out, gauges);
        self.render_counters(&mut out);
        out
    }

    /// Executions by outcome and the histogram of their durations.
    fn render_executions(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP pyexec_executions_total Executions by outcome.\n");
        out.push_str("# TYPE pyexec_executions_total counter\n");
        for ((_, name), counter) in OUTCOMES.iter().zip(&self.executions) {
            let _ = writeln!(
                out,
                "pyexec_executions_total{{outcome=\"{name}\"}} {}",
                get(counter)
            );
        }
        out.push_str("# HELP pyexec_execution_duration_seconds Time of an execution.\n");
        out.push_str("# TYPE pyexec_execution_duration_seconds histogram\n");
        for (bound, bucket) in BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "pyexec_execution_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.duration_buckets[BUCKETS.len()]);
        let _ = writeln!(
            out,
            "pyexec_execution_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "pyexec_execution_duration_seconds_sum {}",
            get(&self.duration_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "pyexec_execution_duration_seconds_count {count}");
    }

    /// The gauges: the sandbox's, read when rendered, and the HTTP connections open.
    fn render_gauges(&self, out: &mut String, gauges: &Gauges) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            out,
            "pyexec_queue_depth",
            "Calls waiting for their turn (a slot, a session's running call, the preinstall).",
            gauges.queue_depth,
        );
        gauge(
            out,
            "pyexec_queue_bytes",
            "Bytes of code and input the waiting calls hold.",
            gauges.queue_bytes,
        );
        gauge(
            out,
            "pyexec_busy_slots",
            "Slots held by running calls.",
            gauges.busy_slots,
        );
        gauge(
            out,
            "pyexec_warm_containers",
            "Warm containers ready.",
            gauges.warm_containers,
        );
        gauge(
            out,
            "pyexec_sessions_open",
            "Sessions open (create_session), each one container.",
            gauges.sessions_open,
        );
        gauge(
            out,
            "pyexec_http_connections_open",
            "HTTP connections open (0 on stdio).",
            get(&self.http_open) as usize,
        );
    }

    /// Pool takes, installs, reaped containers and refused HTTP connections.
    fn render_counters(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counter = |out: &mut String, name: &str, help: &str, labels: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (label, value) in labels {
                let _ = writeln!(out, "{name}{label} {value}");
            }
        };
        counter(
            out,
            "pyexec_pool_takes_total",
            "Calls that found a warm container (hit) or started their own (miss).",
            &[
                ("{result=\"hit\"}", get(&self.pool_hits)),
                ("{result=\"miss\"}", get(&self.pool_misses)),
            ],
        );
        counter(
            out,
            "pyexec_installs_total",
            "install_packages calls by outcome.",
            &[
                ("{outcome=\"ok\"}", get(&self.installs_ok)),
                ("{outcome=\"error\"}", get(&self.installs_failed)),
            ],
        );
        counter(
            out,
            "pyexec_reaped_containers_total",
            "Containers of dead servers the reaper removed.",
            &[("", get(&self.reaped))],
        );
        counter(
            out,
            "pyexec_http_connections_refused_total",
            "HTTP connections answered 503 and closed at accept, by the cap that refused them.",
            &[
                ("{cap=\"open\"}", get(&self.http_refused_open)),
                ("{cap=\"peer\"}", get(&self.http_refused_peer)),
            ],
        );
        counter(
            out,
            "pyexec_egress_connections_total",
            "Connections through the egress proxy, by verdict (blocked: attempts refused).",
            &[
                ("{verdict=\"allowed\"}", get(&self.egress_allowed)),
                ("{verdict=\"blocked\"}", get(&self.egress_blocked)),
            ],
        );
        counter(
            out,
            "pyexec_egress_bytes_total",
            "Bytes through the egress proxy, by direction.",
            &[
                ("{direction=\"sent\"}", get(&self.egress_sent)),
                ("{direction=\"received\"}", get(&self.egress_received)),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.execution(Outcome::Ok, 20);
        metrics.execution(Outcome::Ok, 3000);
        metrics.execution(Outcome::Timeout, 30_000);
        metrics.pool(true);
        metrics.install(false);
        metrics.reaped(2);
        metrics.http_refused(Refused::PeerLimit);
        metrics.http_open(5);
        let attempt = |verdict, connections, sent, received| crate::egress::Attempt {
            host: "api.github.com".into(),
            port: 443,
            verdict,
            reason: None,
            connections,
            bytes_sent: sent,
            bytes_received: received,
            secrets: Vec::new(),
        };
        metrics.egress(&[
            attempt(crate::egress::Verdict::Allowed, 3, 100, 5000),
            attempt(crate::egress::Verdict::Blocked, 2, 0, 0),
        ]);
        let text = metrics.render(&Gauges {
            queue_depth: 1,
            queue_bytes: 4096,
            busy_slots: 2,
            warm_containers: 3,
            sessions_open: 1,
        });
        assert!(text.contains("pyexec_executions_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("pyexec_executions_total{outcome=\"timeout\"} 1\n"));
        assert!(text.contains("pyexec_execution_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("pyexec_execution_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("pyexec_execution_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("pyexec_execution_duration_seconds_count 3\n"));
        assert!(text.contains("pyexec_execution_duration_seconds_sum 33.02\n"));
        assert!(text.contains("pyexec_busy_slots 2\n"));
        assert!(text.contains("pyexec_sessions_open 1\n"));
        assert!(text.contains("pyexec_pool_takes_total{result=\"hit\"} 1\n"));
        assert!(text.contains("pyexec_installs_total{outcome=\"error\"} 1\n"));
        assert!(text.contains("pyexec_reaped_containers_total 2\n"));
        assert!(text.contains("pyexec_queue_bytes 4096\n"));
        assert!(text.contains("pyexec_http_connections_refused_total{cap=\"peer\"} 1\n"));
        assert!(text.contains("pyexec_egress_connections_total{verdict=\"allowed\"} 3\n"));
        assert!(text.contains("pyexec_egress_connections_total{verdict=\"blocked\"} 2\n"));
        assert!(text.contains("pyexec_egress_bytes_total{direction=\"received\"} 5000\n"));
        assert!(text.contains("pyexec_http_connections_refused_total{cap=\"open\"} 0\n"));
        assert!(text.contains("pyexec_http_connections_open 5\n"));
    }
}
