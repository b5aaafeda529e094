//! The policy of one call, below the protocol: what happens between a tool's arguments and
//! the answer it renders.
//!
//! An `execute_python` call waits while `PREINSTALLED_PACKAGES` install (holding a place in
//! the queue meanwhile), learns which package environment is current, runs plain or in its
//! session, follows the environment tag and runs once more when the image vanished under it
//! (nothing ran), and is counted; it comes back as a [`Ran`] or a typed [`CallError`].
//! Sessions wait for the preinstall too; installs check the caller's grants and are counted.
//!
//! Nothing here knows MCP: the tools hand in a [`Watcher`] (where notices, a running
//! program's output and pip's lines go) and render what comes back. No Docker type leaves
//! this module: an error is classified here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::auth::Grants;
use crate::engine::DockerError;
use crate::image::{EnvState, Environment, InstallError, InstallReport, Preinstall};
use crate::metrics::Outcome;
use crate::sandbox::{
    ExecutionRequest, ExecutionResult, Sandbox, SandboxError, SessionEnd, SessionInfo, Stream,
};
use crate::settings::SandboxConfig;

/// How often a call waiting for the preinstall says it still waits.
const PREINSTALL_NOTICE_EVERY: Duration = Duration::from_secs(3);

/// The longest `session_id` looked up: a real one is 32 hex digits; a longer one is unknown at
/// once, never held while it waits.
const MAX_SESSION_ID: usize = 64;

/// A running program's output on its way to the caller.
pub trait OutputRelay: Send + Sync {
    /// Takes a chunk of output; never waits.
    fn push(&self, stream: Stream, bytes: &[u8]);
    /// Sends what is still held and stops.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// pip's output on its way to the caller, a line at a time.
pub trait LineRelay: Send + Sync {
    /// Offers one line; never waits.
    fn line(&self, line: &str);
    /// Sends what is still held (and what was left out) and stops.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Where one call's notices and output go; the executor says when, the caller how.
pub trait Watcher: Sync {
    type Output: OutputRelay;
    type Lines: LineRelay;
    /// One notice while the call waits (for the preinstall).
    fn notice(&self, message: String) -> impl Future<Output = ()> + Send;
    /// Starts relaying the program's output, when the caller wants it while the call runs.
    fn output(&self) -> Option<Self::Output>;
    /// Starts relaying pip's output.
    fn lines(&self) -> Self::Lines;
}

/// One execution as asked for.
pub struct Call {
    pub request: ExecutionRequest,
    /// The session to run in; `None` for a fresh interpreter.
    pub session_id: Option<String>,
    /// Who owns the sessions the call may use (a token's digest; `None` on stdio).
    pub owner: Option<String>,
    /// Which client connection the call came in on, for the log.
    pub client: String,
}

impl Call {
    /// A call of `code` with `stdin`; an empty `session_id` is none, and one is cut to just
    /// past the longest id (no real one is longer): an id that long is unknown anyway, and
    /// the call does not hold megabytes of it while it waits.
    pub fn new(
        request: ExecutionRequest,
        session_id: Option<String>,
        owner: Option<String>,
        client: String,
    ) -> Self {
        let session_id = session_id
            .filter(|id| !id.trim().is_empty())
            .map(|id| id.chars().take(MAX_SESSION_ID + 1).collect::<String>());
        Self {
            request,
            session_id,
            owner,
            client,
        }
    }
}

/// A call that ran.
pub struct Ran {
    pub result: ExecutionResult,
    /// For the top of the answer: the preinstall failed, or was still running at the end of
    /// the wait, so the call ran without it.
    pub note: Option<String>,
    /// Calls in a session only: what became of the session.
    pub session: Option<InSession>,
}

/// What a session's call says about its session.
pub struct InSession {
    /// `None` while the session goes on, else why it ended with this call.
    pub ended: Option<SessionEnd>,
    /// The program failed an import, and the session started from an image older than the
    /// current one: a new session would see packages installed since.
    pub stale_import: bool,
}

/// Why a call did not run, or failed.
#[derive(Debug)]
pub enum CallError {
    /// The queue was full while the preinstall ran: refused at once, nothing ran.
    Busy(SandboxError),
    /// The call was cancelled while it waited for the preinstall: nothing ran.
    CancelledWaiting,
    /// The sandbox's answer.
    Failed(SandboxError),
}

/// A session just opened.
pub struct Opened {
    pub info: SessionInfo,
    /// The preinstall's note, as for a [`Ran`].
    pub note: Option<String>,
}

/// Why an install did not happen.
#[derive(Debug)]
pub enum InstallRefusal {
    /// The caller's token does not carry the `install` grant.
    NotGranted,
    /// The environment's answer.
    Failed(InstallError),
}

/// The installed packages, and the install running now if any (its specs, how long so far).
pub struct Packages {
    pub state: EnvState,
    pub installing: Option<(Vec<String>, Duration)>,
}

/// The calls' policy over one [`Sandbox`] and its package [`Environment`].
#[derive(Clone)]
pub struct Executor {
    /// Runs the code.
    sandbox: Arc<Sandbox>,
    /// Knows and changes what packages executions can import.
    environment: Arc<Environment>,
}

impl Executor {
    pub fn new(sandbox: Arc<Sandbox>, environment: Arc<Environment>) -> Self {
        Self {
            sandbox,
            environment,
        }
    }

    /// The sandbox's settings (limits, outputs, sessions).
    pub fn config(&self) -> &SandboxConfig {
        self.sandbox.config()
    }

    /// Whether `install_packages` is on (`--no-install` turns it off).
    pub fn installs(&self) -> bool {
        self.environment.config().installs
    }

    /// Runs one call: the preinstall wait, the environment, the run (retried once when the
    /// image vanished), the count.
    pub async fn execute<W: Watcher>(
        &self,
        call: Call,
        watcher: &W,
        cancel: &CancellationToken,
    ) -> Result<Ran, CallError> {
        let started = Instant::now();
        let note = match self.wait_ready(call.request.size(), watcher, cancel).await {
            Ok(note) => note,
            Err(refused) => {
                // Nothing ran and no container was made.
                let outcome = match &refused {
                    CallError::CancelledWaiting => Outcome::Cancelled,
                    _ => Outcome::Error,
                };
                self.count(outcome, started.elapsed(), &call.client);
                return Err(refused);
            }
        };
        // The first call learns which package environment is current (one inspect).
        self.load_environment().await;
        // With a watcher that wants it, output reaches the caller while the program runs.
        let live = watcher.output();
        let on_output = |stream, bytes: &[u8]| {
            if let Some(live) = &live {
                live.push(stream, bytes);
            }
        };
        let outcome = self.run(&call, cancel, &on_output).await;
        if let Some(live) = live {
            live.finish().await;
        }
        self.count(outcome_of(&outcome), started.elapsed(), &call.client);
        if let Ok((result, _)) = &outcome {
            self.sandbox
                .metrics()
                .egress(result.egress.as_deref().unwrap_or_default());
        }
        let (result, session) = outcome.map_err(CallError::Failed)?;
        let session = session.map(|(ended, image)| InSession {
            stale_import: self.stale_import(&result, &image),
            ended,
        });
        Ok(Ran {
            result,
            note,
            session,
        })
    }

    /// Waits for the preinstall, holding a place among the waiting calls while it runs (a
    /// call waiting for the preinstall is a waiting call like one waiting for a slot).
    async fn wait_ready<W: Watcher>(
        &self,
        size: usize,
        watcher: &W,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, CallError> {
        let preinstalling = matches!(
            *self.environment.preinstall_state().borrow(),
            Preinstall::Running
        );
        let place = match preinstalling.then(|| self.sandbox.wait_place(size)) {
            Some(Err(busy)) => return Err(CallError::Busy(busy)),
            Some(Ok(place)) => Some(place),
            None => None,
        };
        let waited = self.wait_for_preinstall(watcher, cancel).await;
        drop(place);
        waited.ok_or(CallError::CancelledWaiting)
    }

    /// The run itself, plain or in the call's session; with the session's fate and image.
    async fn run(
        &self,
        call: &Call,
        cancel: &CancellationToken,
        on_output: &(dyn Fn(Stream, &[u8]) + Send + Sync),
    ) -> Result<(ExecutionResult, Option<(Option<SessionEnd>, Arc<str>)>), SandboxError> {
        let request = &call.request;
        if let Some(id) = &call.session_id {
            let owner = call.owner.as_deref();
            let called = self
                .sandbox
                .execute_in_session(id, owner, request, cancel, on_output)
                .await?;
            return Ok((called.result, Some((called.ended, called.image))));
        }
        let outcome = self.sandbox.execute_live(request, cancel, on_output).await;
        // Another server sharing the tag replaced the environment and removed the image this
        // one still pointed at: nothing ran (the create failed), so follow the tag and retry.
        if let Err(SandboxError::Docker(DockerError::ImageMissing { image })) = &outcome
            && **image != *self.sandbox.config().image
            && self.environment.follow_tag().await.unwrap_or(false)
        {
            let retried = self.sandbox.execute_live(request, cancel, on_output).await;
            return retried.map(|result| (result, None));
        }
        outcome.map(|result| (result, None))
    }

    /// Whether a session's call failed an import in a session older than the current image.
    fn stale_import(&self, result: &ExecutionResult, image: &str) -> bool {
        let import_failed = ["ModuleNotFoundError", "ImportError"]
            .iter()
            .any(|error| result.stderr.to_string().contains(error));
        import_failed && *self.sandbox.current_image() != *image
    }

    /// Opens a session once the preinstall is over (a session keeps the packages it starts
    /// with) and the current environment is known (it keeps the image it starts from).
    pub async fn create_session<W: Watcher>(
        &self,
        owner: Option<&str>,
        watcher: &W,
        cancel: &CancellationToken,
    ) -> Result<Opened, CallError> {
        let note = self
            .wait_for_preinstall(watcher, cancel)
            .await
            .ok_or(CallError::CancelledWaiting)?;
        // On a fresh server this is its first look at the environment.
        self.load_environment().await;
        match self.sandbox.create_session(owner, cancel).await {
            Ok(info) => Ok(Opened { info, note }),
            Err(error) => Err(CallError::Failed(error)),
        }
    }

    /// Ends the session `id` of `owner` at once.
    pub fn close_session(&self, id: &str, owner: Option<&str>) -> Result<(), SandboxError> {
        self.sandbox.close_session(id, owner)
    }

    /// Installs `specs` for a caller with `grants` (`None`: one user, everything allowed),
    /// pip's output relayed as it comes; counted.
    pub async fn install<W: Watcher>(
        &self,
        specs: &[String],
        grants: Option<Grants>,
        watcher: &W,
        cancel: &CancellationToken,
    ) -> Result<InstallReport, InstallRefusal> {
        if grants.is_some_and(|grants| !grants.install) {
            tracing::info!("install_packages refused: the token has no install permission");
            return Err(InstallRefusal::NotGranted);
        }
        let pip = watcher.lines();
        let on_line = |line: &str| pip.line(line);
        let installed = self.environment.install(specs, &on_line, cancel).await;
        pip.finish().await;
        self.sandbox.metrics().install(installed.is_ok());
        installed.map_err(InstallRefusal::Failed)
    }

    /// The installed packages (the environment loaded first), and the install running now.
    pub async fn packages(&self) -> Result<Packages, SandboxError> {
        let state = self.environment.ensure_loaded().await?;
        Ok(Packages {
            state,
            installing: self.environment.install_in_progress(),
        })
    }

    /// Learns which package environment is current, once (one inspect).
    async fn load_environment(&self) {
        if let Err(error) = self.environment.ensure_loaded().await {
            tracing::debug!(%error, "package environment not loaded");
        }
    }

    /// Counts and logs one execution (outcome and duration; never code or output).
    fn count(&self, outcome: Outcome, took: Duration, session: &str) {
        let ms = took.as_millis() as u64;
        self.sandbox.metrics().execution(outcome, ms);
        tracing::info!(session, outcome = ?outcome, duration_ms = ms, "execute_python");
    }

    /// Waits while `PREINSTALLED_PACKAGES` are being installed, saying so every few seconds;
    /// `None` when the call was cancelled meanwhile, else the note for the answer when the
    /// preinstall failed.
    async fn wait_for_preinstall<W: Watcher>(
        &self,
        watcher: &W,
        cancel: &CancellationToken,
    ) -> Option<Option<String>> {
        let mut state = self.environment.preinstall_state();
        let started = Instant::now();
        let specs = self.environment.config().preinstalled.join(" ");
        // The install ends by its own time limit; past that (and a margin) stop waiting.
        let longest = self.environment.config().install_timeout + PREINSTALL_NOTICE_EVERY * 20;
        loop {
            if started.elapsed() > longest {
                return Some(Some(format!(
                    "note: PREINSTALLED_PACKAGES ({specs}) were still installing after {} s, so \
                     this call ran without them",
                    started.elapsed().as_secs()
                )));
            }
            let current = state.borrow_and_update().clone();
            match current {
                Preinstall::Running => {}
                Preinstall::Failed(why) => {
                    return Some(Some(format!(
                        "note: PREINSTALLED_PACKAGES ({specs}) could not be installed, so this \
                         call ran without them: {why}"
                    )));
                }
                Preinstall::Done | Preinstall::NotAsked => return Some(None),
            }
            watcher
                .notice(format!(
                    "waiting for PREINSTALLED_PACKAGES ({specs}) to finish installing: {} s so far",
                    started.elapsed().as_secs()
                ))
                .await;
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return Some(None) },
                () = tokio::time::sleep(PREINSTALL_NOTICE_EVERY) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }
}

/// How an execution is counted.
fn outcome_of<T>(outcome: &Result<(ExecutionResult, T), SandboxError>) -> Outcome {
    match outcome {
        Ok((result, _)) if result.timed_out => Outcome::Timeout,
        Ok((result, _)) if result.oom_killed => Outcome::Oom,
        Ok((result, _)) if result.exit_code != 0 => Outcome::Error,
        Ok(_) => Outcome::Ok,
        Err(SandboxError::Cancelled) => Outcome::Cancelled,
        Err(_) => Outcome::Error,
    }
}
