//! One session: state that survives between calls, in one hardened container with a lifetime.
//!
//! A session is one execution container (exactly `container_spec`'s hardening and limits, its
//! own uid, its own tmpfs) whose runner keeps one interpreter alive and runs call after call
//! in the same `__main__` namespace (`runner.py`, session mode). This module owns one open
//! session: its one-call-at-a-time connection (the attach stream opened at creation, held by
//! the running call), reading a call's end from the runner's trailers ([`Conn::finish_call`]),
//! freezing its container between calls, and its end: [`Session::end`] takes the container's
//! guard, whose drop removes it. The registry of open sessions is `sessions.rs`; one call in a
//! session is `session_call.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::AttachContainerResults;
use schemars::JsonSchema;
use serde::Serialize;

use super::guard::ContainerGuard;
use super::protocol::{Bundle, KILLED, Trailer};
use super::stream::until_trailers;
use super::types::{ExecutionResult, Stream};
use crate::engine::DockerError;

/// What `create_session` answers.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct SessionInfo {
    /// Pass it as `session_id` to `execute_python`.
    pub session_id: String,
    /// Seconds without a call after which the session is closed.
    pub idle_seconds: u64,
    /// Seconds after its creation at which the session is closed.
    pub max_age_seconds: u64,
    /// Seconds one call may run before it is interrupted.
    pub call_timeout_seconds: u64,
    /// Sessions that may be open at once on this server.
    pub max_sessions: usize,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The program ended the interpreter (`exit()`, `sys.exit()`, a crash).
    Exited,
    /// A call ran past its timeout and did not stop when interrupted: it was killed.
    TimedOut,
    /// The interpreter was killed for using more memory than allowed.
    OutOfMemory,
    /// `close_session` closed it.
    Closed,
    /// It was idle too long or reached its maximum age.
    Expired,
    /// The server is shutting down.
    ShuttingDown,
    /// Its container ended unexpectedly (killed from outside, Docker restarted).
    Lost,
}

/// One call in a session: its result, and whether the session ended with it.
#[derive(Debug)]
pub struct SessionOutcome {
    pub result: ExecutionResult,
    /// `Some` when the session is over: later calls with its id are refused.
    pub ended: Option<SessionEnd>,
    /// The image the session started from (it keeps it while installs move the current one).
    pub image: Arc<str>,
}

/// One open session.
pub(super) struct Session {
    /// Its container's name.
    pub name: String,
    /// The token that created it (a digest), over HTTP; `None` on stdio.
    pub owner: Option<String>,
    /// The image its container runs.
    pub image: Arc<str>,
    pub created: Instant,
    last_used: Mutex<Instant>,
    /// The attach stream; held by the running call, so calls take turns.
    pub conn: Arc<tokio::sync::Mutex<Conn>>,
    /// Removes the container when dropped; taken by [`Session::end`].
    guard: Mutex<Option<ContainerGuard>>,
    /// Why it ended, once it has.
    ended: Mutex<Option<SessionEnd>>,
}

/// A session's stream, and the trailers of the call it is in, if any.
pub(super) struct Conn {
    pub streams: AttachContainerResults,
    pub pending: Option<(Trailer, Trailer)>,
}

/// How the runner ended one call.
pub(super) struct Finished {
    pub status: i64,
    pub oom: bool,
    pub interrupted: bool,
    pub ended: bool,
    pub bundle: Bundle,
}

impl Session {
    /// A session just started in the container `guard` owns, reached through `streams`.
    pub fn new(
        guard: ContainerGuard,
        streams: AttachContainerResults,
        owner: Option<&str>,
        image: Arc<str>,
    ) -> Self {
        let now = Instant::now();
        Self {
            name: guard.name().to_string(),
            owner: owner.map(str::to_string),
            image,
            created: now,
            last_used: Mutex::new(now),
            conn: Arc::new(tokio::sync::Mutex::new(Conn {
                streams,
                pending: None,
            })),
            guard: Mutex::new(Some(guard)),
            ended: Mutex::new(None),
        }
    }

    /// Ends the session: the first reason given is kept, and the container is removed (the
    /// guard's drop, on a tracked task). A call running in it sees its stream end.
    pub fn end(&self, why: SessionEnd) {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// What the session's programs tried through the egress proxy since the last call's
    /// report (a fresh budget for the next), or `None` without an allowlist.
    pub fn take_egress(&self) -> Option<Vec<crate::egress::Attempt>> {
        let guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref()?.egress().map(|e| e.take())
    }

    pub fn is_over(&self) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn why_ended(&self) -> Option<SessionEnd> {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

impl Conn {
    /// Reads the output of the pending call until both of its trailers are in (`Some`), or
    /// the stream ends (`None`: the container is gone).
    pub async fn finish_call(
        &mut self,
        image: &str,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Option<Finished>, DockerError> {
        let Some((out, err)) = self.pending.as_mut() else {
            return Ok(None);
        };
        let ended = until_trailers(&mut self.streams.output, out, err, image, on_output).await;
        let finished = match ended {
            Ok(true) => Some(Finished {
                status: out.status().unwrap_or(KILLED),
                oom: out.oom(),
                interrupted: out.interrupted(),
                ended: out.ended(),
                bundle: out.take_bundle(),
            }),
            Ok(false) => None,
            Err(error) => {
                self.pending = None;
                return Err(error);
            }
        };
        self.pending = None;
        Ok(finished)
    }
}

/// Pauses a session's container (the engine's freezer) between calls. A failure is said, not
/// fatal: the session goes on unfrozen.
pub(super) async fn freeze(docker: &Docker, name: &str) {
    if let Err(error) = docker.pause_container(name).await {
        tracing::warn!(container = %name, %error, "cannot pause the session between calls");
    }
}

/// Unpauses a session's container for a call; one that is running and not paused (its pause
/// failed) is fine as it is, whatever the engine answered (Docker says 409, Podman 500).
pub(super) async fn thaw(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    let Err(error) = docker.unpause_container(name).await else {
        return Ok(());
    };
    let state = docker
        .inspect_container(name, None)
        .await
        .ok()
        .and_then(|c| c.state);
    match state {
        Some(state) if state.running == Some(true) && state.paused != Some(true) => Ok(()),
        _ => Err(error),
    }
}
