//! One call in a session: in its interpreter, after the calls before it.
//!
//! [`SessionCall::run`] takes the session's turn (a second call waits while one runs, up to
//! the call timeout and a margin, then is answered busy) and a concurrency slot, then goes in
//! three steps: write the payload into the thawed container ([`SessionCall::write`]), read the
//! call's output until the runner's trailers end it ([`SessionCall::read`]), and classify how
//! it ended ([`SessionCall::classify`]). The outcome is built in one place, and the session
//! ended (or frozen until its next call) in one place ([`SessionCall::settle`]). A cancelled
//! call interrupts the runner and answers at once; a task waits for the call's end so the
//! session can go on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::launcher::Launcher;
use super::payload::ExecutionRequest;
use super::protocol::{Bundle, INTERRUPT, INTERRUPT_GRACE, KILLED, MANIFEST_MAX, Trailer};
use super::session::{Conn, Finished, Session, SessionEnd, SessionOutcome, freeze, thaw};
use super::sessions::Sessions;
use super::slots::Slots;
use super::stream::exit_status;
use super::types::{Output, RunOutcome, SandboxError, Stream};
use crate::engine::DockerError;

/// Beyond a call's timeout and the runner's grace: past this the server stops waiting for the
/// runner itself and ends the session.
const BACKSTOP: Duration = Duration::from_secs(10);

/// One call in the session `id` of `owner`, and what it uses of the sandbox.
pub(super) struct SessionCall<'a> {
    pub sessions: &'a Sessions,
    pub launcher: &'a Launcher,
    pub slots: &'a Slots,
    pub id: &'a str,
    pub owner: Option<&'a str>,
    pub cancel: &'a CancellationToken,
}

/// How the runner's side of a call ended, before it is classified.
enum Read {
    /// The runner ended the call: both of its trailers are in.
    Finished(Finished),
    /// The stream ended with no trailer (or the payload could not be written): the container
    /// is gone.
    Gone,
    /// The runner did not end the call within the wait: it is stuck, and so is the session.
    Stuck,
}

/// What a call came to: its outcome but for its duration, and whether the session ended.
struct Verdict {
    exit_code: i64,
    timed_out: bool,
    oom_killed: bool,
    bundle: Bundle,
    ended: Option<SessionEnd>,
}

impl SessionCall<'_> {
    /// Runs `request` in the session, giving each chunk of output to `live` as it arrives.
    /// The call holds a concurrency slot while it runs.
    pub async fn run(
        &self,
        request: &ExecutionRequest,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<SessionOutcome, SandboxError> {
        let config = self.launcher.config();
        let limits = &config.limits;
        request.check_size(limits.max_input_bytes)?;
        let wait = limits.timeout + INTERRUPT_GRACE + BACKSTOP;
        let (session, mut conn) = self.take_turn(request.size(), wait).await?;
        session.touch();
        let permit = self.slots.acquire(self.cancel, request.size()).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let files_budget = config.outputs.max_files_bytes;
        let payload =
            request.encode_session(limits.max_input_bytes, &token, files_budget, limits.timeout)?;
        let image = session.image.clone();
        let started = Instant::now();
        let docker = self.launcher.docker().await?;
        let written = self.write(docker, &session, &mut conn, payload).await?;
        let max_bundle = files_budget + MANIFEST_MAX;
        conn.pending = Some((Trailer::new(&token, max_bundle), Trailer::new(&token, 0)));
        let mut output = Output::new(limits.max_output_bytes);
        let read = if written {
            self.read(&mut conn, &image, wait, &mut output, live)
                .await?
        } else {
            Some(Ok(Read::Gone))
        };
        let Some(read) = read else {
            self.interrupt(docker, session, conn, permit, image);
            return Err(SandboxError::Cancelled);
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                self.end(&session, SessionEnd::Lost);
                return Err(error.into());
            }
        };
        let verdict = self.classify(docker, &session, &image, read).await;
        let ended = verdict.ended;
        let outcome = RunOutcome {
            exit_code: verdict.exit_code,
            timed_out: verdict.timed_out,
            oom_killed: verdict.oom_killed,
            duration_ms,
            bundle: verdict.bundle,
        };
        let egress = session.take_egress();
        self.settle(docker, &session, conn, permit, ended);
        let mut result = output.finish(outcome, files_budget);
        result.egress = egress;
        Ok(SessionOutcome {
            result,
            ended,
            image,
        })
    }

    /// The session and its connection, once the call running in it (if any) is over. Waiting
    /// for it counts as waiting, like waiting for a slot.
    async fn take_turn(
        &self,
        size: usize,
        wait: Duration,
    ) -> Result<(Arc<Session>, OwnedMutexGuard<Conn>), SandboxError> {
        let session = self.sessions.get(self.id, self.owner)?;
        let conn = match session.conn.clone().try_lock_owned() {
            Ok(conn) => conn,
            Err(_) => {
                let _place = self.slots.wait_place(size)?;
                tokio::select! {
                    conn = tokio::time::timeout(wait, session.conn.clone().lock_owned()) => {
                        conn.map_err(|_| SandboxError::SessionBusy { waited: wait })?
                    }
                    _ = self.cancel.cancelled() => return Err(SandboxError::Cancelled),
                    _ = self.launcher.stopping().cancelled() => {
                        return Err(SandboxError::ShuttingDown);
                    }
                }
            }
        };
        // It may have ended while this call waited its turn.
        let session = self.sessions.get(self.id, self.owner)?;
        Ok((session, conn))
    }

    /// Thaws the session's container and writes the payload: true once it is all in, false
    /// when the stream is gone (the read step then finds out why).
    async fn write(
        &self,
        docker: &Docker,
        session: &Session,
        conn: &mut Conn,
        payload: Vec<u8>,
    ) -> Result<bool, SandboxError> {
        if let Err(error) = thaw(docker, &session.name).await {
            tracing::warn!(container = %session.name, %error, "cannot unpause the session");
            self.end(session, SessionEnd::Lost);
            return Err(SandboxError::Docker(crate::engine::classify(
                error,
                "unpause the session's container",
                &session.name,
            )));
        }
        tokio::select! {
            written = async {
                conn.streams.input.write_all(&payload).await?;
                conn.streams.input.flush().await
            } => Ok(written.is_ok()),
            // Half a payload leaves the runner mid-header: the session cannot go on. (Ended
            // here, it is forgotten at the next expiry.)
            _ = self.cancel.cancelled() => {
                session.end(SessionEnd::Lost);
                Err(SandboxError::Cancelled)
            }
            _ = self.launcher.stopping().cancelled() => Err(SandboxError::ShuttingDown),
        }
    }

    /// Reads the call's output into `output` (and `live`) until both trailers are in, the
    /// stream ends, or `wait` passes; `None` when the call was cancelled first.
    async fn read(
        &self,
        conn: &mut Conn,
        image: &str,
        wait: Duration,
        output: &mut Output,
        live: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<Option<Result<Read, DockerError>>, SandboxError> {
        let mut on_output = |s, b: &[u8]| {
            output.push(s, b);
            live(s, b);
        };
        let reading = conn.finish_call(image, &mut on_output);
        let read = tokio::select! {
            read = tokio::time::timeout(wait, reading) => read,
            _ = self.cancel.cancelled() => return Ok(None),
            _ = self.launcher.stopping().cancelled() => return Err(SandboxError::ShuttingDown),
        };
        Ok(Some(match read {
            Ok(Ok(Some(finished))) => Ok(Read::Finished(finished)),
            Ok(Ok(None)) => Ok(Read::Gone),
            Ok(Err(error)) => Err(error),
            Err(_) => Ok(Read::Stuck),
        }))
    }

    /// What the call came to, and whether the session ended with it (and why).
    async fn classify(
        &self,
        docker: &Docker,
        session: &Session,
        image: &str,
        read: Read,
    ) -> Verdict {
        match read {
            Read::Finished(mut finished) => {
                if finished.ended && finished.status == KILLED && !finished.oom {
                    // Where the runner cannot read the memory cgroup (gVisor), the engine's
                    // record of the container may know the OOM killer did it.
                    if let Ok((_, oom)) = exit_status(docker, &session.name, image).await {
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
                Verdict {
                    exit_code: finished.status,
                    timed_out: finished.interrupted,
                    oom_killed: finished.oom,
                    bundle: finished.bundle,
                    ended: finished.ended.then_some(why),
                }
            }
            Read::Gone => {
                // The container is gone: closed, expired or killed from outside while the
                // call ran.
                let (exit_code, oom_killed) = exit_status(docker, &session.name, image)
                    .await
                    .unwrap_or((KILLED, false));
                let why = session.why_ended().unwrap_or(if oom_killed {
                    SessionEnd::OutOfMemory
                } else {
                    SessionEnd::Lost
                });
                Verdict {
                    exit_code,
                    timed_out: false,
                    oom_killed,
                    bundle: Bundle::None,
                    ended: Some(why),
                }
            }
            Read::Stuck => Verdict {
                exit_code: KILLED,
                timed_out: true,
                oom_killed: false,
                bundle: Bundle::None,
                ended: Some(SessionEnd::TimedOut),
            },
        }
    }

    /// After the call: ends the session if the call ended it, else freezes it until its next
    /// call, so what the program left running uses no CPU outside a call's slot. The answer
    /// does not wait for the freeze; the next call does (the stream and the slot are held
    /// until it is done).
    fn settle(
        &self,
        docker: &Docker,
        session: &Session,
        conn: OwnedMutexGuard<Conn>,
        permit: OwnedSemaphorePermit,
        ended: Option<SessionEnd>,
    ) {
        if let Some(why) = ended {
            self.end(session, why);
            drop(conn);
            drop(permit);
            return;
        }
        session.touch();
        let docker = docker.clone();
        let name = session.name.clone();
        self.launcher.cleanup().spawn(async move {
            freeze(&docker, &name).await;
            drop(conn);
            drop(permit);
        });
    }

    /// Ends the session with the call, and forgets it.
    fn end(&self, session: &Session, why: SessionEnd) {
        session.end(why);
        self.sessions.close(self.id, why);
    }

    /// A cancelled call: the runner interrupts it; a task waits for its end (the slot with
    /// it) so the session can go on, or ends the session if the call does not stop.
    fn interrupt(
        &self,
        docker: &Docker,
        session: Arc<Session>,
        mut conn: OwnedMutexGuard<Conn>,
        permit: OwnedSemaphorePermit,
        image: Arc<str>,
    ) {
        let docker = docker.clone();
        self.launcher.cleanup().spawn(async move {
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
    }
}
