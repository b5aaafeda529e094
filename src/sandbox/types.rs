//! The types every part of the sandbox shares, at the bottom so each sibling imports them
//! from here and none reaches back into the façade (`mod.rs`): what a call answers
//! ([`ExecutionResult`]), why it could not ([`SandboxError`]), which stream a chunk came from
//! ([`Stream`]), how one attached run ended ([`RunOutcome`]), the two capped streams a call
//! collects into its result ([`Output`]), and the start-up bound every container shares.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::files::Returned;
use super::output::{CappedBuffer, Text};
use super::protocol::Bundle;
use crate::engine::DockerError;

/// Longest wait for create + attach + start; a runtime that hangs there must not hang the call.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What one execution produced.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct ExecutionResult {
    /// Everything the program wrote to stdout (its head and tail when over the cap; see
    /// `truncated`).
    pub stdout: Text,
    /// Everything the program wrote to stderr (likewise).
    pub stderr: Text,
    /// The program's exit status; 137 when it was killed.
    pub exit_code: i64,
    /// True when the program ran past the time limit and was killed.
    pub timed_out: bool,
    /// True when the program was killed for using more memory than allowed.
    pub oom_killed: bool,
    /// True when output past the per-stream limit was dropped.
    pub truncated: bool,
    /// Time from the container's start to the program's end, in milliseconds.
    pub duration_ms: u64,
    /// Figures and files the program handed back.
    #[serde(skip)]
    #[schemars(skip)]
    pub returned: Returned,
    /// What the program tried to reach through the egress proxy, host by host (empty when
    /// it tried nothing); absent when the server allows no host (`--allow-host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<crate::egress::Attempt>>,
}

impl ExecutionResult {
    /// True when the program did not finish normally with status 0.
    pub fn failed(&self) -> bool {
        self.exit_code != 0 || self.timed_out || self.oom_killed
    }
}

/// Why an execution could not produce a result. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "request too large: {size} bytes of code and input, the limit is {limit} bytes \
         (raise it with --max-input / PYEXEC_MAX_INPUT)"
    )]
    RequestTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "the server is busy: {waiting} calls are already waiting for one of its {slots} \
         container slots\n\
         hint: try again in a moment, or raise --concurrency (PYEXEC_CONCURRENCY) or \
         --max-queue (PYEXEC_MAX_QUEUE)"
    )]
    Busy { waiting: usize, slots: usize },
    #[error(
        "the server is busy: the calls already waiting hold {} KiB of code and input, and with \
         this call's {} KiB they would pass the {} KiB they may hold\n\
         hint: try again in a moment, send less input per call, or raise --max-queue-bytes \
         (PYEXEC_MAX_QUEUE_BYTES)",
        held.div_ceil(1024),
        size.div_ceil(1024),
        max / 1024
    )]
    BusyBytes {
        held: usize,
        size: usize,
        max: usize,
    },
    #[error("the call was cancelled; its container was removed")]
    Cancelled,
    #[error(
        "sessions are turned off on this server (--max-sessions 0 / PYEXEC_MAX_SESSIONS=0)\n\
         hint: call execute_python without session_id; each call then starts from nothing"
    )]
    SessionsOff,
    #[error(
        "{max} sessions are open, the most this server allows\n\
         hint: close one you no longer need with close_session, or call execute_python \
         without session_id; the limit is --max-sessions (PYEXEC_MAX_SESSIONS)"
    )]
    SessionLimit { max: usize },
    #[error(
        "your token has {max} sessions open, the most one token may have\n\
         hint: close one you no longer need with close_session, or call execute_python \
         without session_id; the limit is --max-sessions-per-token \
         (PYEXEC_MAX_SESSIONS_PER_TOKEN)"
    )]
    SessionLimitPerToken { max: usize },
    #[error(
        "unknown session `{id}`: it was closed, ended, expired (sessions close after {} s \
         without a call and {} s after creation) or never existed; its state is gone\n\
         hint: call create_session for a new one and run what it needs again",
        idle.as_secs(),
        max_age.as_secs()
    )]
    UnknownSession {
        id: String,
        idle: Duration,
        max_age: Duration,
    },
    #[error(
        "the session is still running another call after {} s\n\
         hint: a session runs one call at a time; wait for that call's answer, then call \
         again",
        waited.as_secs()
    )]
    SessionBusy { waited: Duration },
    #[error("the server is shutting down; the call was stopped")]
    ShuttingDown,
    #[error("the call's container could not be given its egress proxy: {reason}")]
    Egress { reason: String },
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How one attached container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Exit status; 137 when killed.
    pub exit_code: i64,
    /// True when the server killed it at the timeout.
    pub timed_out: bool,
    /// True when the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Time from start to the end of its output.
    pub duration_ms: u64,
    /// The files the runner handed back after its trailer.
    pub bundle: Bundle,
}

/// One call's two capped output streams, turned into its result at the end.
pub struct Output {
    stdout: CappedBuffer,
    stderr: CappedBuffer,
}

impl Output {
    pub fn new(cap: usize) -> Self {
        Self {
            stdout: CappedBuffer::new(cap),
            stderr: CappedBuffer::new(cap),
        }
    }

    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.push(bytes),
            Stream::Stderr => self.stderr.push(bytes),
        }
    }

    pub fn finish(self, outcome: RunOutcome, files_budget: usize) -> ExecutionResult {
        let truncated = self.stdout.truncated() || self.stderr.truncated();
        ExecutionResult {
            stdout: self.stdout.into_text(),
            stderr: self.stderr.into_text(),
            exit_code: outcome.exit_code,
            timed_out: outcome.timed_out,
            oom_killed: outcome.oom_killed,
            truncated,
            duration_ms: outcome.duration_ms,
            returned: Returned::from_bundle(outcome.bundle, files_budget),
            egress: None,
        }
    }
}
