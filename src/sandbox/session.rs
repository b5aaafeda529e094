//! Sessions: state that survives between calls, in one hardened container with a lifetime.
//!
//! A session is one execution container (exactly [`container_spec`]'s hardening and limits,
//! its own uid, its own tmpfs) whose runner keeps one interpreter alive and runs call after
//! call in the same `__main__` namespace (`runner.py`, session mode). This module owns the
//! registry of open sessions, their one-call-at-a-time connection (the attach stream opened
//! at creation), and their end: [`Session::end`] takes the container's guard, whose drop
//! removes it. A session ends when its interpreter does (`exit()`, a crash, the OOM killer),
//! when an interrupted call does not stop within the runner's grace, on `close_session`, when
//! idle past `--session-idle` or older than `--session-max-age` (the expiry task, every
//! second), and at shutdown. Should the server die instead, the runner sees its stdin close
//! (or its idle time pass) and exits with "no payload", and any server's reaper removes it.
//!
//! [`container_spec`]: super::container_spec

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::container::AttachContainerResults;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::container::{ContainerGuard, call_uid, session_spec};
use super::payload::{Bundle, ExecutionRequest, Trailer};
use super::stream::{exit_status, start_attached, until_trailers};
use super::{ExecutionResult, KILLED, Output, RunOutcome, Sandbox, SandboxError, Stream, files};
use crate::config::SessionConfig;
use crate::docker::DockerError;

/// How long the runner gives an interrupted call to end before it kills the interpreter
/// (`_INTERRUPT_GRACE` in runner.py).
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// Beyond a call's timeout and the runner's grace: past this the server stops waiting for the
/// runner itself and ends the session.
const BACKSTOP: Duration = Duration::from_secs(10);
/// How often the expiry task looks for idle and old sessions.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// The byte that asks a session's runner to interrupt the running call (`_INTERRUPT`).
const INTERRUPT: &[u8] = b"!";

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

/// The open sessions of one sandbox, and the limit on them.
pub(super) struct Sessions {
    config: SessionConfig,
    open: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions being created, by owner: they count against the limits already.
    starting: Mutex<HashMap<Option<String>, usize>>,
}

/// One open session.
pub(super) struct Session {
    /// Its container's name.
    name: String,
    /// The token that created it (a digest), over HTTP; `None` on stdio.
    owner: Option<String>,
    /// The image its container runs.
    image: Arc<str>,
    created: Instant,
    last_used: Mutex<Instant>,
    /// The attach stream; held by the running call, so calls take turns.
    conn: Arc<tokio::sync::Mutex<Conn>>,
    /// Removes the container when dropped; taken by [`Session::end`].
    guard: Mutex<Option<ContainerGuard>>,
    /// Why it ended, once it has.
    ended: Mutex<Option<SessionEnd>>,
}

/// A session's stream, and the trailers of the call it is in, if any.
struct Conn {
    streams: AttachContainerResults,
    pending: Option<(Trailer, Trailer)>,
}

/// How the runner ended one call.
struct Finished {
    status: i64,
    oom: bool,
    interrupted: bool,
    ended: bool,
    bundle: Bundle,
}

impl Sessions {
    pub(super) fn new(config: SessionConfig) -> Self {
        Self {
            config,
            open: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions open now.
    pub(super) fn count(&self) -> usize {
        self.open().len()
    }

    /// A place for one more session of `owner`, or the limit's error: `--max-sessions` in
    /// all and, for an HTTP token, `--max-sessions-per-token`.
    fn reserve(&self, owner: Option<&str>) -> Result<Reservation<'_>, SandboxError> {
        let open = self.open();
        if self.config.max == 0 {
            return Err(SandboxError::SessionsOff);
        }
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() + starting.values().sum::<usize>() >= self.config.max {
            return Err(SandboxError::SessionLimit {
                max: self.config.max,
            });
        }
        let owner = owner.map(str::to_string);
        if owner.is_some() {
            let own = open.values().filter(|s| s.owner == owner).count()
                + starting.get(&owner).copied().unwrap_or(0);
            if own >= self.config.max_per_owner {
                return Err(SandboxError::SessionLimitPerToken {
                    max: self.config.max_per_owner,
                });
            }
        }
        *starting.entry(owner.clone()).or_default() += 1;
        Ok(Reservation {
            starting: &self.starting,
            owner,
        })
    }

    /// The session `id` if it is open and belongs to `owner`: any other case is "unknown",
    /// so an id of someone else's session tells nothing.
    fn get(&self, id: &str, owner: Option<&str>) -> Result<Arc<Session>, SandboxError> {
        if self.config.max == 0 {
            return Err(SandboxError::SessionsOff);
        }
        let open = self.open();
        match open.get(id) {
            Some(session) if session.owner.as_deref() == owner && !session.is_over() => {
                Ok(session.clone())
            }
            _ => Err(SandboxError::UnknownSession {
                id: shown_id(id),
                idle: self.config.idle,
                max_age: self.config.max_age,
            }),
        }
    }

    /// Ends and forgets the session `id`.
    fn close(&self, id: &str, why: SessionEnd) {
        if let Some(session) = self.open().remove(id) {
            session.end(why);
        }
    }

    /// Ends idle and old sessions (an idle one only between calls; an old one even mid-call)
    /// and forgets ended ones.
    pub(super) fn expire(&self) {
        let mut open = self.open();
        open.retain(|_, session| {
            if session.is_over() {
                return false;
            }
            let old = session.created.elapsed() >= self.config.max_age;
            let idle = session.idle_for() >= self.config.idle && session.conn.try_lock().is_ok();
            if old || idle {
                session.end(SessionEnd::Expired);
                return false;
            }
            true
        });
    }

    /// Ends every session (shutdown).
    pub(super) fn end_all(&self) {
        for (_, session) in self.open().drain() {
            session.end(SessionEnd::ShuttingDown);
        }
    }
}

/// A counted place among the sessions being created; given back when dropped.
struct Reservation<'a> {
    starting: &'a Mutex<HashMap<Option<String>, usize>>,
    owner: Option<String>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = starting.get_mut(&self.owner) {
            *count -= 1;
            if *count == 0 {
                starting.remove(&self.owner);
            }
        }
    }
}

impl Session {
    /// Ends the session: the first reason given is kept, and the container is removed (the
    /// guard's drop, on a tracked task). A call running in it sees its stream end.
    fn end(&self, why: SessionEnd) {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    fn is_over(&self) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn why_ended(&self) -> Option<SessionEnd> {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

impl Conn {
    /// Reads the output of the pending call until both of its trailers are in (`Some`), or
    /// the stream ends (`None`: the container is gone).
    async fn finish_call(
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
async fn freeze(docker: &Docker, name: &str) {
    if let Err(error) = docker.pause_container(name).await {
        tracing::warn!(container = %name, %error, "cannot pause the session between calls");
    }
}

/// Unpauses a session's container for a call; one that is running and not paused (its pause
/// failed) is fine as it is, whatever the engine answered (Docker says 409, Podman 500).
async fn thaw(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
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

impl Sandbox {
    /// Opens a session: one container, started now, whose interpreter keeps its state between
    /// calls. It counts against the concurrency limit only while it starts (and later while a
    /// call runs); against `--max-sessions` until it ends.
    pub async fn create_session(
        &self,
        owner: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<SessionInfo, SandboxError> {
        self.sessions.expire();
        let reserved = self.sessions.reserve(owner)?;
        let permit = self.acquire(cancel, 0).await?;
        let image = self.current_image();
        let starting = async {
            let docker = self.docker.get().await?;
            let mut guard = self.guard(docker, None);
            guard.may_be_paused();
            let spec = session_spec(
                &self.config,
                &image,
                &self.instance,
                SystemTime::now(),
                call_uid(),
            );
            let streams = start_attached(docker, &guard, spec).await?;
            Ok::<_, SandboxError>((guard, streams))
        };
        let (guard, streams) = tokio::select! {
            started = starting => started?,
            _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
            _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
        };
        // Frozen until its first call, like between any two calls.
        freeze(self.docker.get().await?, guard.name()).await;
        drop(permit);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let session = Arc::new(Session {
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
        });
        self.sessions.open().insert(id.clone(), session);
        drop(reserved);
        // Shutdown may have ended every session while this one started.
        if self.stopping.is_cancelled() {
            self.sessions.close(&id, SessionEnd::ShuttingDown);
            return Err(SandboxError::ShuttingDown);
        }
        let config = &self.config;
        Ok(SessionInfo {
            session_id: id,
            idle_seconds: config.sessions.idle.as_secs(),
            max_age_seconds: config.sessions.max_age.as_secs(),
            call_timeout_seconds: config.limits.timeout.as_secs(),
            max_sessions: config.sessions.max,
        })
    }

    /// Ends the session `id` of `owner` at once, removing its container (a call running in it
    /// is stopped).
    pub fn close_session(&self, id: &str, owner: Option<&str>) -> Result<(), SandboxError> {
        self.sessions.get(id, owner)?;
        self.sessions.close(id, SessionEnd::Closed);
        Ok(())
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.count()
    }

    /// Runs one request in the session `id`: in its interpreter, after the calls before it.
    /// A second call waits while one runs (up to the call timeout and a margin), then is
    /// answered busy. The call holds a concurrency slot while it runs.
    pub async fn execute_in_session(
        &self,
        id: &str,
        owner: Option<&str>,
        request: &ExecutionRequest,
        cancel: &CancellationToken,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<SessionOutcome, SandboxError> {
        let limits = &self.config.limits;
        request.check_size(limits.max_input_bytes)?;
        let session = self.sessions.get(id, owner)?;
        let wait = limits.timeout + INTERRUPT_GRACE + BACKSTOP;
        let mut conn = match session.conn.clone().try_lock_owned() {
            Ok(conn) => conn,
            Err(_) => {
                // Waiting for the session's running call counts as waiting, like a slot.
                let _place = self.wait_place(request.size())?;
                tokio::select! {
                    conn = tokio::time::timeout(wait, session.conn.clone().lock_owned()) => {
                        conn.map_err(|_| SandboxError::SessionBusy { waited: wait })?
                    }
                    _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
                    _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
                }
            }
        };
        // It may have ended while this call waited its turn.
        let session = self.sessions.get(id, owner)?;
        session.touch();
        let permit = self.acquire(cancel, request.size()).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let files_budget = self.config.outputs.max_files_bytes;
        let payload =
            request.encode_session(limits.max_input_bytes, &token, files_budget, limits.timeout)?;
        let image = session.image.clone();
        let started = Instant::now();
        if let Err(error) = thaw(self.docker.get().await?, &session.name).await {
            tracing::warn!(container = %session.name, %error, "cannot unpause the session");
            session.end(SessionEnd::Lost);
            self.sessions.close(id, SessionEnd::Lost);
            return Err(SandboxError::Docker(crate::docker::classify(
                error,
                "unpause the session's container",
                &session.name,
            )));
        }
        let written = tokio::select! {
            written = async {
                conn.streams.input.write_all(&payload).await?;
                conn.streams.input.flush().await
            } => written.is_ok(),
            // Half a payload leaves the runner mid-header: the session cannot go on.
            _ = cancel.cancelled() => {
                session.end(SessionEnd::Lost);
                return Err(SandboxError::Cancelled);
            }
            _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
        };
        drop(payload);
        let max_bundle = files_budget + files::MANIFEST_MAX;
        conn.pending = Some((Trailer::new(&token, max_bundle), Trailer::new(&token, 0)));
        let mut output = Output::new(limits.max_output_bytes);
        let read = if written {
            let mut on_output = |s, b: &[u8]| {
                output.push(s, b);
                live(s, b);
            };
            let reading = conn.finish_call(&image, &mut on_output);
            tokio::select! {
                read = tokio::time::timeout(wait, reading) => Some(read),
                _ = cancel.cancelled() => None,
                _ = self.stopping.cancelled() => return Err(SandboxError::ShuttingDown),
            }
        } else {
            Some(Ok(Ok(None)))
        };
        let Some(read) = read else {
            // Cancelled: the runner interrupts the call; a task waits for its end (the slot
            // with it) so the session can go on, or ends it if the call does not stop.
            let session = session.clone();
            let docker = self.docker.get().await?.clone();
            self.cleanup.spawn(async move {
                let _permit = permit;
                let _ = conn.streams.input.write_all(INTERRUPT).await;
                let _ = conn.streams.input.flush().await;
                let drained = tokio::time::timeout(
                    INTERRUPT_GRACE + BACKSTOP,
                    conn.finish_call(&image, &mut |_, _| {}),
                )
                .await;
                match drained {
                    Ok(Ok(Some(finished))) if !finished.ended => {
                        session.touch();
                        freeze(&docker, &session.name).await;
                    }
                    _ => session.end(SessionEnd::Lost),
                }
            });
            return Err(SandboxError::Cancelled);
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (outcome, ended) = match read {
            Ok(Ok(Some(finished))) => {
                let mut finished = finished;
                if finished.ended && finished.status == KILLED && !finished.oom {
                    // Where the runner cannot read the memory cgroup (gVisor), the engine's
                    // record of the container may know the OOM killer did it.
                    if let Ok(docker) = self.docker.get().await
                        && let Ok((_, oom)) = exit_status(docker, &session.name, &image).await
                    {
                        finished.oom = oom;
                    }
                }
                let why = if finished.oom {
                    SessionEnd::OutOfMemory
                } else if finished.interrupted {
                    SessionEnd::TimedOut
                } else {
                    SessionEnd::Exited
                };
                let ended = finished.ended.then_some(why);
                let outcome = RunOutcome {
                    exit_code: finished.status,
                    timed_out: finished.interrupted,
                    oom_killed: finished.oom,
                    duration_ms,
                    bundle: finished.bundle,
                };
                (outcome, ended)
            }
            Ok(Ok(None)) => {
                // The stream ended with no trailer: the container is gone (closed, expired or
                // killed from outside while the call ran).
                let docker = self.docker.get().await?;
                let (exit_code, oom_killed) = exit_status(docker, &session.name, &image)
                    .await
                    .unwrap_or((KILLED, false));
                let why = session.why_ended().unwrap_or(if oom_killed {
                    SessionEnd::OutOfMemory
                } else {
                    SessionEnd::Lost
                });
                let outcome = RunOutcome {
                    exit_code,
                    timed_out: false,
                    oom_killed,
                    duration_ms,
                    bundle: Bundle::None,
                };
                (outcome, Some(why))
            }
            Ok(Err(error)) => {
                self.sessions.close(id, SessionEnd::Lost);
                return Err(error.into());
            }
            Err(_) => {
                // The runner did not end the call itself: it is stuck, so is the session.
                let outcome = RunOutcome {
                    exit_code: KILLED,
                    timed_out: true,
                    oom_killed: false,
                    duration_ms,
                    bundle: Bundle::None,
                };
                (outcome, Some(SessionEnd::TimedOut))
            }
        };
        match ended {
            Some(why) => {
                session.end(why);
                self.sessions.close(id, why);
                drop(conn);
                drop(permit);
            }
            None => {
                session.touch();
                // Frozen until its next call, so what the program left running uses no CPU
                // outside a call's slot. The answer does not wait for it; the next call does
                // (the stream and the slot are held until it is done).
                let docker = self.docker.get().await?.clone();
                let name = session.name.clone();
                self.cleanup.spawn(async move {
                    freeze(&docker, &name).await;
                    drop(conn);
                    drop(permit);
                });
            }
        }
        Ok(SessionOutcome {
            result: output.finish(outcome, files_budget),
            ended,
            image,
        })
    }

    /// Keeps closing idle and old sessions, every second, until shutdown.
    pub(super) fn start_session_expiry(self: &Arc<Self>) {
        let sandbox = self.clone();
        self.cleanup.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(EXPIRE_EVERY) => sandbox.sessions.expire(),
                    _ = sandbox.stopping.cancelled() => return,
                }
            }
        });
    }
}

/// A session id as it may appear in an answer: ids are 32 hex digits, so anything else is
/// shown cut to a few safe characters (the argument is the caller's, not ours).
fn shown_id(id: &str) -> String {
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    if safe.is_empty() {
        "(empty)".to_string()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_from_the_caller_is_shown_only_as_safe_characters() {
        assert_eq!(shown_id("0123abcd"), "0123abcd");
        assert_eq!(shown_id("x\n\u{1b}[31mred`; rm"), "x31mredrm");
        assert_eq!(shown_id(&"a".repeat(10_000)).len(), 40);
        assert_eq!(shown_id("\n"), "(empty)");
    }
}
