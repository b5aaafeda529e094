//! The MCP face of the server: tool argument structs, tool descriptions, and the mapping of
//! sandbox results to MCP content.
//!
//! This layer is thin on purpose: it validates arguments, hands an [`ExecutionRequest`] to the
//! [`Sandbox`] or package specs to the [`Environment`], and renders what comes back (pip's
//! output becomes progress notifications). No Docker types appear here.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::attachments;
use crate::docker::DockerError;
use crate::image::{EnvState, Environment, InstallError, InstallReport, Preinstall};
use crate::live::Live;
use crate::progress::Forwarder;
use crate::sandbox::{
    ExecutionRequest, ExecutionResult, MAX_INPUT_LINES, Returned, Sandbox, SandboxError,
    SessionEnd, SessionInfo, StdinLines, fit_both,
};
use crate::settings::SandboxConfig;

/// Arguments of `execute_python`, named exactly as the original TypeScript server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecutePythonArgs {
    /// The Python source code to run as the main program.
    pub code: String,
    /// Lines given to the program as standard input (each followed by a newline), then EOF.
    // Described as a plain array (clients such as the MCP Inspector's CLI turn a nullable
    // array into a string); `null` is still accepted, as the original server did.
    #[serde(rename = "inputData", default)]
    #[schemars(with = "Vec<String>")]
    pub input_data: InputData,
    /// A session from create_session: the code runs in that session's interpreter, seeing
    /// the variables, imports, functions and /tmp files of its earlier calls. Leave it out
    /// (or empty) for a fresh interpreter.
    #[serde(default)]
    #[schemars(with = "String")]
    pub session_id: Option<String>,
}

/// Arguments of `close_session`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CloseSessionArgs {
    /// The id create_session answered.
    pub session_id: String,
}

/// `inputData`, read straight into one stdin buffer as rmcp hands it over: no `Vec<String>`
/// of it ever exists (four million empty strings would be ~100 MB of them), and past
/// [`MAX_INPUT_LINES`] entries the call is refused while it is read. `null` is no input, as
/// in the original server.
#[derive(Debug, Default)]
pub struct InputData(pub StdinLines);

impl<'de> Deserialize<'de> for InputData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

        struct Line<'a>(&'a mut StdinLines);

        impl<'de> DeserializeSeed<'de> for Line<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }

        impl Visitor<'_> for Line<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string (one line of stdin)")
            }
            fn visit_str<E: de::Error>(self, line: &str) -> Result<(), E> {
                self.0.push(line);
                Ok(())
            }
        }

        struct Lines;

        impl<'de> Visitor<'de> for Lines {
            type Value = InputData;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings (the lines of stdin)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<InputData, E> {
                Ok(InputData::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<InputData, E> {
                Ok(InputData::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<InputData, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputData, A::Error> {
                let mut stdin = StdinLines::default();
                while seq.next_element_seed(Line(&mut stdin))?.is_some() {
                    if stdin.lines > MAX_INPUT_LINES {
                        return Err(de::Error::custom(format_args!(
                            "inputData has more than {MAX_INPUT_LINES} entries; each entry is \
                             one line of stdin, so join lines into fewer entries or read the \
                             data from code"
                        )));
                    }
                }
                Ok(InputData(stdin))
            }
        }

        deserializer.deserialize_any(Lines)
    }
}

/// Arguments of `install_packages`, named exactly as the original server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct InstallPackagesArgs {
    /// Package specs from the package index: a name with optional extras and version
    /// specifiers, e.g. "numpy", "pandas==2.*", "requests[socks]>=2.31".
    pub packages: Vec<String>,
}

/// The structured answer of `list_packages`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageList {
    /// Every installed distribution, sorted by name.
    pub packages: Vec<InstalledPackage>,
}

/// One installed distribution.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
}

/// The structured part of an `execute_python` answer (stdout and stderr are text content).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecutionStatus {
    /// The program's exit status; 137 when it was killed.
    pub exit_code: i64,
    /// True when the program ran past the time limit and was killed.
    pub timed_out: bool,
    /// True when the program was killed for using more memory than allowed.
    pub oom_killed: bool,
    /// True when part of the output was left out (marked in the text where it was).
    pub truncated: bool,
    /// Run time in milliseconds.
    pub duration_ms: u64,
    /// Calls in a session only: null while the session goes on, else why it ended with this
    /// call (its state is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ended: Option<SessionEnd>,
}

/// The MCP server: one [`Sandbox`] and its package [`Environment`] behind the tools.
#[derive(Clone)]
pub struct PythonExecutor {
    /// Runs the code.
    sandbox: Arc<Sandbox>,
    /// Knows and changes what packages executions can import.
    environment: Arc<Environment>,
    /// The tools, with descriptions that state the limits in force.
    tool_router: ToolRouter<Self>,
    /// The least severe log notification the client wants (`logging/setLevel`).
    log_level: Arc<std::sync::atomic::AtomicU8>,
}

#[tool_router]
impl PythonExecutor {
    pub fn new(sandbox: Arc<Sandbox>, environment: Arc<Environment>) -> Self {
        let mut tool_router = Self::tool_router();
        if let Some(route) = tool_router.map.get_mut("create_session") {
            route.attr.description = Some(create_session_description(sandbox.config()).into());
        }
        if sandbox.config().sessions.max == 0 {
            tool_router.map.remove("create_session");
            tool_router.map.remove("close_session");
        }
        if !environment.config().installs {
            tool_router.map.remove("install_packages");
        }
        if let Some(route) = tool_router.map.get_mut("execute_python") {
            route.attr.description = Some(execute_description(sandbox.config()).into());
            route.attr.output_schema = Some(Arc::new(
                serde_json::to_value(schemars::schema_for!(ExecutionStatus))
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default(),
            ));
        }
        Self {
            sandbox,
            environment,
            tool_router,
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(severity(
                DEFAULT_LOG_LEVEL,
            ))),
        }
    }

    /// Where one call's progress (or, without a progress token, log) notifications go.
    /// Takes the request's `_meta` by value and keeps only its progress token (one of at most
    /// [`MAX_PROGRESS_TOKEN`] bytes): the rest of `_meta`, which a client may make megabytes
    /// long, is not held while the call waits and runs.
    fn notifier(&self, meta: RequestMetaObject, peer: Peer<RoleServer>) -> Notifier {
        let token = meta.get_progress_token().filter(|token| {
            let size = serde_json::to_vec(token).map_or(usize::MAX, |json| json.len());
            size <= MAX_PROGRESS_TOKEN
        });
        drop(meta);
        Notifier {
            token,
            logger: Logger {
                peer: peer.clone(),
                level: self.log_level.clone(),
            },
            peer,
            sent: Arc::default(),
        }
    }

    /// Run Python code in a fresh, isolated container (description replaced at start).
    #[tool(name = "execute_python")]
    async fn execute_python(
        &self,
        Parameters(args): Parameters<ExecutePythonArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        extensions: rmcp::model::Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let session = session_of(&extensions);
        let owner = owner_of(&extensions);
        // Cut to just past the longest id (no real one is longer): an id that long is unknown
        // anyway, and the call does not hold megabytes of it while it waits.
        let session_id = args
            .session_id
            .filter(|id| !id.trim().is_empty())
            .map(|id| id.chars().take(MAX_SESSION_ID + 1).collect::<String>());
        let request = ExecutionRequest {
            code: args.code,
            stdin: args.input_data.0.bytes,
        };
        let started = std::time::Instant::now();
        let notifier = self.notifier(meta, peer);
        // A call waiting for the preinstall is a waiting call like one waiting for a slot.
        let preinstalling = matches!(
            *self.environment.preinstall_state().borrow(),
            Preinstall::Running
        );
        let place = match preinstalling.then(|| self.sandbox.wait_place(request.size())) {
            Some(Err(busy)) => {
                let text = busy.to_string();
                self.count(&Err(busy), started.elapsed(), &session);
                return Ok(CallToolResult::error(vec![ContentBlock::text(text)]));
            }
            Some(Ok(place)) => Some(place),
            None => None,
        };
        let waited = self.wait_for_preinstall(&notifier, &cancel).await;
        drop(place);
        let Some(note) = waited else {
            // Nothing ran and no container was made.
            self.count(&Err(SandboxError::Cancelled), started.elapsed(), &session);
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "the call was cancelled while it waited for PREINSTALLED_PACKAGES; nothing ran",
            )]));
        };
        // The first call learns which package environment is current (one inspect).
        if let Err(error) = self.environment.ensure_loaded().await {
            tracing::debug!(%error, "package environment not loaded");
        }
        // With a progress token, output reaches the client while the program runs.
        let live = notifier.token.is_some().then(|| {
            Live::start(move |message| {
                let notifier = notifier.clone();
                async move { notifier.send(message).await }
            })
        });
        let on_output = |stream, bytes: &[u8]| {
            if let Some(live) = &live {
                live.push(stream, bytes);
            }
        };
        let mut in_session = None;
        let mut outcome = match &session_id {
            Some(id) => self
                .sandbox
                .execute_in_session(id, owner.as_deref(), &request, &cancel, &on_output)
                .await
                .map(|called| {
                    in_session = Some((called.ended, called.image));
                    called.result
                }),
            None => {
                self.sandbox
                    .execute_live(&request, &cancel, &on_output)
                    .await
            }
        };
        // Another server sharing the tag replaced the environment and removed the image this
        // one still pointed at: nothing ran (the create failed), so follow the tag and retry.
        if session_id.is_none()
            && let Err(SandboxError::Docker(DockerError::ImageMissing { image })) = &outcome
            && **image != *self.sandbox.config().image
            && self.environment.follow_tag().await.unwrap_or(false)
        {
            outcome = self
                .sandbox
                .execute_live(&request, &cancel, &on_output)
                .await;
        }
        if let Some(live) = live {
            live.finish().await;
        }
        self.count(&outcome, started.elapsed(), &session);
        match outcome {
            Ok(mut result) => {
                let outputs = self.sandbox.config().outputs.clone();
                let returned = std::mem::take(&mut result.returned);
                // The full (capped) output is saved only where there is a folder for it.
                let output = match outputs.output_dir {
                    Some(_) => (result.stdout.to_string(), result.stderr.to_string()),
                    None => Default::default(),
                };
                let session_notes =
                    in_session.map(|(ended, image)| self.session_notes(&result, ended, &image));
                let mut answer = render(result, outputs.max_answer_bytes);
                if let Some(note) = note {
                    answer.content.insert(0, ContentBlock::text(note));
                }
                if let Some((ended, notes)) = session_notes {
                    if let Some(serde_json::Value::Object(status)) =
                        answer.structured_content.as_mut()
                    {
                        status.insert("session_ended".into(), serde_json::json!(ended));
                    }
                    if !notes.is_empty() {
                        answer.content.push(ContentBlock::text(notes.join("\n")));
                    }
                }
                if returned == Returned::default() && outputs.output_dir.is_none() {
                    return Ok(answer);
                }
                let attached = tokio::task::spawn_blocking(move || {
                    attachments::render(returned, (&output.0, &output.1), &outputs)
                })
                .await
                .unwrap_or_else(|error| {
                    vec![ContentBlock::text(format!(
                        "note: the figures and files could not be returned: {error}"
                    ))]
                });
                answer.content.extend(attached);
                Ok(answer)
            }
            Err(error @ SandboxError::RequestTooLarge { .. }) => {
                Err(ErrorData::invalid_params(error.to_string(), None))
            }
            Err(error) => {
                tracing::warn!(%error, "execute_python failed");
                Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]))
            }
        }
    }

    /// What the answer of a session's call says about the session: whether it goes on (and
    /// the reason when it does not), and, for a failed import in a session older than the
    /// last install, that a new session would see the new packages.
    fn session_notes(
        &self,
        result: &ExecutionResult,
        ended: Option<SessionEnd>,
        image: &str,
    ) -> (Option<SessionEnd>, Vec<String>) {
        let limits = &self.sandbox.config().limits;
        let lost = "Its state is gone; call create_session for a new session and run what it \
                    needs again.";
        let mut notes = Vec::new();
        match ended {
            None if result.timed_out => notes.push(format!(
                "The call was interrupted (KeyboardInterrupt) at the {} s limit. The session \
                 goes on with its state; the interrupted statement may be half done.",
                limits.timeout.as_secs()
            )),
            None => {}
            Some(SessionEnd::Exited) => notes.push(format!(
                "The session has ended: the program ended its interpreter (exit status {}). \
                 {lost}",
                result.exit_code
            )),
            Some(SessionEnd::TimedOut) => notes.push(format!(
                "The session has ended: the call ran past the {} s limit and did not stop \
                 when interrupted, so its container was killed. {lost}",
                limits.timeout.as_secs()
            )),
            Some(SessionEnd::OutOfMemory) => notes.push(format!(
                "The session has ended: it ran out of memory ({} MiB for the whole session) \
                 and was killed. {lost}",
                limits.memory_bytes >> 20
            )),
            Some(SessionEnd::Closed) => {
                notes.push(format!("The session was closed while the call ran. {lost}"))
            }
            Some(SessionEnd::Expired) => notes.push(format!(
                "The session reached its maximum age ({} s) while the call ran and was \
                 closed. {lost}",
                self.sandbox.config().sessions.max_age.as_secs()
            )),
            Some(SessionEnd::ShuttingDown | SessionEnd::Lost) => notes.push(format!(
                "The session has ended: its container stopped unexpectedly. {lost}"
            )),
        }
        let import_failed = ["ModuleNotFoundError", "ImportError"]
            .iter()
            .any(|error| result.stderr.to_string().contains(error));
        if import_failed && *self.sandbox.current_image() != *image {
            notes.push(
                "This session started before the last install_packages: it keeps the \
                 packages it started with, so packages installed since are not importable \
                 here. A new session (create_session) sees them."
                    .to_string(),
            );
        }
        (ended, notes)
    }

    /// Open a session: an interpreter that keeps its state between execute_python calls
    /// (description replaced at start with the limits in force).
    #[tool(name = "create_session")]
    async fn create_session(
        &self,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        extensions: rmcp::model::Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let notifier = self.notifier(meta, peer);
        // A session keeps the packages it starts with: it waits for the preinstall.
        let Some(note) = self.wait_for_preinstall(&notifier, &cancel).await else {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "the call was cancelled while it waited for PREINSTALLED_PACKAGES; no session \
                 was opened",
            )]));
        };
        // A session keeps the image it starts from: learn which one is current first (on a
        // fresh server this is its first look at the environment).
        if let Err(error) = self.environment.ensure_loaded().await {
            tracing::debug!(%error, "package environment not loaded");
        }
        let owner = owner_of(&extensions);
        match self.sandbox.create_session(owner.as_deref(), &cancel).await {
            Ok(info) => {
                tracing::info!(session = %session_of(&extensions), "create_session");
                let mut text = render_session(&info, self.sandbox.config());
                if let Some(note) = note {
                    text = format!("{note}\n{text}");
                }
                let mut answer = CallToolResult::success(vec![ContentBlock::text(text)]);
                answer.structured_content = serde_json::to_value(&info).ok();
                Ok(answer)
            }
            Err(error) => {
                tracing::warn!(%error, "create_session failed");
                Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]))
            }
        }
    }

    /// End a session at once: its interpreter, variables and /tmp files are removed with its
    /// container. Sessions also close by themselves when idle or old.
    #[tool(name = "close_session")]
    async fn close_session(
        &self,
        Parameters(args): Parameters<CloseSessionArgs>,
        extensions: rmcp::model::Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let owner = owner_of(&extensions);
        match self
            .sandbox
            .close_session(&args.session_id, owner.as_deref())
        {
            Ok(()) => Ok(CallToolResult::success(vec![ContentBlock::text(
                "The session is closed: its container, variables and files are gone.",
            )])),
            Err(error) => Ok(CallToolResult::error(vec![ContentBlock::text(
                error.to_string(),
            )])),
        }
    }

    /// Counts and logs one execution (outcome and duration; never code or output).
    fn count(
        &self,
        outcome: &Result<ExecutionResult, SandboxError>,
        took: std::time::Duration,
        session: &str,
    ) {
        use crate::metrics::Outcome;
        let counted = match outcome {
            Ok(result) if result.timed_out => Outcome::Timeout,
            Ok(result) if result.oom_killed => Outcome::Oom,
            Ok(result) if result.exit_code != 0 => Outcome::Error,
            Ok(_) => Outcome::Ok,
            Err(SandboxError::Cancelled) => Outcome::Cancelled,
            Err(_) => Outcome::Error,
        };
        let ms = took.as_millis() as u64;
        self.sandbox.metrics().execution(counted, ms);
        tracing::info!(session, outcome = ?counted, duration_ms = ms, "execute_python");
    }

    /// Waits while `PREINSTALLED_PACKAGES` are being installed, saying so every few seconds;
    /// `None` when the call was cancelled meanwhile, else the note for the answer when the
    /// preinstall failed.
    async fn wait_for_preinstall(
        &self,
        notifier: &Notifier,
        cancel: &CancellationToken,
    ) -> Option<Option<String>> {
        let mut state = self.environment.preinstall_state();
        let started = std::time::Instant::now();
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
            notifier
                .send(format!(
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

    /// Install Python packages from the package index so later execute_python calls can import
    /// them. Specs are names with optional extras and versions ("numpy", "pandas==2.*");
    /// pip options, URLs, paths and markers are refused. Installs are kept across restarts.
    #[tool(name = "install_packages")]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackagesArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        extensions: rmcp::model::Extensions,
        cancel: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        if grants_of(&extensions).is_some_and(|grants| !grants.install) {
            tracing::info!("install_packages refused: the token has no install permission");
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                INSTALL_NOT_GRANTED,
            )]));
        }
        let progress = PipProgress::new(self.notifier(meta, peer));
        let on_line = |line: &str| progress.forwarder.line(line);
        let installed = self
            .environment
            .install(&args.packages, &on_line, &cancel)
            .await;
        progress.finish().await;
        self.sandbox.metrics().install(installed.is_ok());
        match installed {
            Ok(report) => Ok(render_install(&report)),
            Err(InstallError::Spec(error)) => {
                Err(ErrorData::invalid_params(error.to_string(), None))
            }
            Err(error) => {
                tracing::warn!(%error, "install_packages failed");
                Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]))
            }
        }
    }

    /// List the packages installed in the environment execute_python runs in, with versions.
    #[tool(name = "list_packages")]
    async fn list_packages(&self) -> Result<CallToolResult, ErrorData> {
        match self.environment.ensure_loaded().await {
            Ok(state) => {
                let mut answer = render_package_list(&state);
                if let Some((specs, running)) = self.environment.install_in_progress() {
                    answer.content.push(ContentBlock::text(format!(
                        "An install is in progress ({}, {} s so far): those packages are not \
                         listed until it ends.",
                        specs.join(" "),
                        running.as_secs()
                    )));
                }
                Ok(answer)
            }
            Err(error) => Ok(CallToolResult::error(vec![ContentBlock::text(
                error.to_string(),
            )])),
        }
    }
}

/// Who owns the sessions a call may use: the bearer token's digest over HTTP (set by
/// `http.rs` once the token is accepted), nobody in particular on stdio.
fn owner_of(extensions: &rmcp::model::Extensions) -> Option<String> {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<crate::auth::TokenOwner>())
        .map(|owner| owner.0.clone())
}

/// What the call's token may do beyond running code; `None` on stdio and without
/// authentication (one user: everything).
fn grants_of(extensions: &rmcp::model::Extensions) -> Option<crate::auth::Grants> {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<crate::auth::TokenOwner>())
        .map(|owner| owner.1)
}

/// The longest progress token honoured, as JSON; a longer one is ignored (no live output).
const MAX_PROGRESS_TOKEN: usize = 256;

/// The longest `session_id` looked up: a real one is 32 hex digits; a longer one is unknown at
/// once, never held while it waits.
const MAX_SESSION_ID: usize = 64;

/// The answer to install_packages from a token without the permission.
const INSTALL_NOT_GRANTED: &str = "install_packages is not allowed for your token: every \
     caller of this server runs code in the environment it would change, so installs are \
     given per token\n\
     hint: use the packages already installed (list_packages), or ask the server's operator \
     to add `install` after your token in the tokens file (--http-tokens)";

/// The answer to install_packages on a server started with `--no-install`.
const INSTALLS_OFF: &str = "install_packages is turned off on this server (--no-install / \
     PYEXEC_NO_INSTALL)\n\
     hint: use the packages already installed (list_packages); the operator chooses them \
     with PREINSTALLED_PACKAGES";

/// The HTTP session a call came in on (`Mcp-Session-Id`), or `stdio`.
fn session_of(extensions: &rmcp::model::Extensions) -> String {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|id| id.to_str().ok())
        .map_or_else(|| "stdio".to_string(), |id| id.chars().take(64).collect())
}

/// How often a call waiting for the preinstall says it still waits.
const PREINSTALL_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Turns pip's output into MCP progress notifications when the client asked for progress (a
/// token), and into log notifications otherwise, so a desktop client sees the install is
/// alive. Lines are capped and coalesced by a [`Forwarder`]; the count of lines not shown is
/// sent last.
struct PipProgress {
    /// Where lines go: one forwarding task, a bounded queue.
    forwarder: Forwarder,
    /// Sends the closing count.
    send: Notifier,
}

/// Sends one message as a progress or log notification.
#[derive(Clone)]
struct Notifier {
    /// The client's progress token, if it sent one.
    token: Option<rmcp::model::ProgressToken>,
    /// Where notifications go.
    peer: Peer<RoleServer>,
    /// Where messages go when there is no token.
    logger: Logger,
    /// Messages sent so far: the progress value.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Notifier {
    // MCP logging is deprecated by SEP-2577, but clients on earlier protocol versions (Claude
    // Desktop among them) still use it, and without a progress token it is the only sign of life.
    #[allow(deprecated)]
    async fn send(&self, message: String) {
        let count = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match self.token.clone() {
            Some(token) => {
                let param =
                    ProgressNotificationParam::new(token, count as f64).with_message(message);
                let _ = self.peer.notify_progress(param).await;
            }
            None => self.logger.log(LoggingLevel::Info, "pip", message).await,
        }
    }
}

impl PipProgress {
    fn new(send: Notifier) -> Self {
        let forwarder = Forwarder::start({
            let send = send.clone();
            move |batch| {
                let send = send.clone();
                async move { send.send(batch).await }
            }
        });
        Self { forwarder, send }
    }

    /// Sends what is still queued, then how many lines were left out.
    async fn finish(self) {
        let skipped = self.forwarder.finish().await;
        if skipped > 0 {
            self.send
                .send(format!("({skipped} more lines of pip output not shown)"))
                .await;
        }
    }
}

/// Log notifications sent until the client picks a level: pip's progress and notices, not
/// debugging chatter.
#[allow(deprecated)]
const DEFAULT_LOG_LEVEL: LoggingLevel = LoggingLevel::Info;

/// A level's rank, least severe first (RFC 5424 order, as MCP uses it).
#[allow(deprecated)]
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Sends log notifications to one client at or above the level it set.
#[derive(Clone)]
struct Logger {
    peer: Peer<RoleServer>,
    level: Arc<std::sync::atomic::AtomicU8>,
}

impl Logger {
    #[allow(deprecated)]
    async fn log(&self, level: LoggingLevel, logger: &str, message: String) {
        if severity(level) < self.level.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, message.into()).with_logger(logger);
        let _ = self.peer.notify_logging_message(param).await;
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PythonExecutor {
    /// The router's dispatch, except that install_packages on a server without installs (it
    /// is not listed there) is answered with the reason rather than as an unknown tool.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        if request.name == "install_packages" && !self.environment.config().installs {
            return Ok(CallToolResult::error(vec![ContentBlock::text(INSTALLS_OFF)]).into());
        }
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    /// `logging/setLevel`: later log notifications below `level` are not sent. (The MCP
    /// Inspector sends it at connect, since the server declares logging.)
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: rmcp::service::RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_level.store(
            severity(request.level),
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::debug!(level = ?request.level, "client set the log level");
        Ok(())
    }

    #[allow(deprecated)] // enable_logging: see PipProgress::line
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Runs Python code in a fresh, isolated Docker container per call (no network, no \
             state kept between calls), or, in a session from create_session, in one \
             interpreter that keeps its state between calls.",
        )
    }
}

/// The tool description: what is available and the limits in force.
pub fn execute_description(config: &SandboxConfig) -> String {
    let limits = &config.limits;
    let network = if config.network == "none" {
        "There is no network access.".to_string()
    } else {
        format!("Network: Docker network `{}`.", config.network)
    };
    let outputs = &config.outputs;
    let returned = if outputs.max_files_bytes > 0 {
        format!(
            " Figures come back as images: matplotlib needs no setup; call plt.show() or leave \
             figures open. Files the program writes to /tmp/outputs/ come back too (images as \
             images, text as text): at most {images} images (larger ones are downscaled), \
             {files} MiB of files in all.",
            images = outputs.max_images,
            files = outputs.max_files_bytes as f64 / (1 << 20) as f64,
        )
    } else {
        String::new()
    };
    let workspace = if config.workspace.is_some() {
        " The user's data is readable (not writable) under /workspace."
    } else {
        ""
    };
    let sessions = if config.sessions.max > 0 {
        format!(
            " With `session_id` from create_session, the code runs in that session's \
             interpreter instead, with the variables, imports, functions and /tmp files of its \
             earlier calls (an exception ends the call, not the session; exit() ends the \
             session). Use a session for multi-step work on the same data (load once, then \
             ask several questions); leave it out for independent snippets. A session runs \
             one call at a time and closes {idle} without a call or {age} after creation.",
            idle = minutes(config.sessions.idle),
            age = minutes(config.sessions.max_age),
        )
    } else {
        String::new()
    };
    format!(
        "Run Python 3 code in a fresh, isolated container and return its stdout, stderr and \
         exit code. Without session_id each call is a new interpreter: no variables, files or \
         imports are kept between calls.{sessions} `inputData` lines are the program's stdin. The standard library and \
         packages installed with install_packages are available. {network} Only /tmp is \
         writable ({tmp} MiB).{workspace}{returned} Limits per call: {timeout} s wall clock, \
         {memory} MiB memory, {cpus} CPU, {pids} processes. Output in the answer: {answer} KiB \
         of text in all; past that the start and the end of each stream are kept (so the \
         traceback is always there) and the middle is left out and marked. Print results you \
         want to see; print summaries rather than whole large tables.",
        tmp = limits.tmp_bytes >> 20,
        timeout = limits.timeout.as_secs(),
        memory = limits.memory_bytes >> 20,
        cpus = limits.nano_cpus as f64 / 1e9,
        pids = limits.pids,
        answer = outputs.max_answer_bytes >> 10,
    )
}

/// `create_session`'s description: when to use a session, and its limits.
pub fn create_session_description(config: &SandboxConfig) -> String {
    let limits = &config.limits;
    format!(
        "Open a session: a Python interpreter in its own isolated container that keeps its \
         state between execute_python calls given its session_id (variables, imports, \
         functions, files under /tmp). Use one for multi-step work on the same data, e.g. \
         load a large file once and then ask several questions about it; do not use one for \
         independent snippets (plain execute_python calls start clean). Limits: at most \
         {max} sessions open at once; a session closes {idle} without a call and {age} after \
         creation, or with close_session (close it when done); one call at a time, each \
         interrupted after {timeout} s; {memory} MiB memory, {tmp} MiB of /tmp and \
         {pids} processes for the whole session; no network unless the server allows it. \
         Packages installed later are seen only by sessions created after the install.",
        max = config.sessions.max,
        idle = minutes(config.sessions.idle),
        age = minutes(config.sessions.max_age),
        timeout = limits.timeout.as_secs(),
        memory = limits.memory_bytes >> 20,
        tmp = limits.tmp_bytes >> 20,
        pids = limits.pids,
    )
}

/// A lifetime as a model reads it: "10 min", "1 h", "45 s".
fn minutes(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The text of `create_session`'s answer.
fn render_session(info: &SessionInfo, config: &SandboxConfig) -> String {
    format!(
        "Session {id} is open. Pass session_id \"{id}\" to execute_python to run code in it; \
         variables, imports, functions and /tmp files are kept between its calls. It closes \
         after {idle} without a call, {age} after creation, or with close_session. Each call \
         may run {timeout} s, then it is interrupted.",
        id = info.session_id,
        idle = minutes(config.sessions.idle),
        age = minutes(config.sessions.max_age),
        timeout = info.call_timeout_seconds,
    )
}

/// Renders an install report as text plus the structured report.
pub fn render_install(report: &InstallReport) -> CallToolResult {
    let mut lines = Vec::new();
    if report.installed.is_empty() {
        lines.push("Nothing new to install.".to_string());
    } else {
        lines.push(format!("Installed: {}", report.installed.join(", ")));
    }
    if !report.already_present.is_empty() {
        lines.push(format!(
            "Already present: {}",
            report.already_present.join(", ")
        ));
    }
    if report.rebuilt {
        lines.push("The environment was rebuilt from the base in one layer.".to_string());
    }
    lines.push(format!("Took {:.1} s.", report.duration_ms as f64 / 1000.0));
    let mut answer = CallToolResult::success(vec![ContentBlock::text(lines.join("\n"))]);
    answer.structured_content = serde_json::to_value(report).ok();
    answer
}

/// Renders the installed distributions as `name==version` lines plus a structured list.
pub fn render_package_list(state: &EnvState) -> CallToolResult {
    let packages: Vec<InstalledPackage> = state
        .packages
        .values()
        .map(|(name, version)| InstalledPackage {
            name: name.clone(),
            version: version.clone(),
        })
        .collect();
    let text = if packages.is_empty() {
        "No packages installed beyond the Python standard library.".to_string()
    } else {
        packages
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut answer = CallToolResult::success(vec![ContentBlock::text(text)]);
    answer.structured_content = serde_json::to_value(PackageList { packages }).ok();
    answer
}

/// Renders an execution as labelled text blocks plus the structured status fields, the text
/// of both streams fitted to `max_answer` bytes (head and tail of each kept).
pub fn render(result: ExecutionResult, max_answer: usize) -> CallToolResult {
    let failed = result.failed();
    let mut content = Vec::new();
    let (stdout, stderr) = fit_both(&result.stdout, &result.stderr, max_answer);
    if !stdout.is_empty() || stderr.is_empty() {
        let stdout = if stdout.is_empty() {
            "(no output)"
        } else {
            &stdout
        };
        content.push(ContentBlock::text(format!("stdout:\n{stdout}")));
    }
    if !stderr.is_empty() {
        content.push(ContentBlock::text(format!("stderr:\n{stderr}")));
    }
    if failed {
        content.push(ContentBlock::text(status_line(&result)));
    }
    let status = ExecutionStatus {
        exit_code: result.exit_code,
        timed_out: result.timed_out,
        oom_killed: result.oom_killed,
        truncated: result.truncated || stdout.omitted().is_some() || stderr.omitted().is_some(),
        duration_ms: result.duration_ms,
        session_ended: None,
    };
    let mut answer = if failed {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    answer.structured_content = serde_json::to_value(status).ok();
    answer
}

fn status_line(result: &ExecutionResult) -> String {
    if result.timed_out {
        format!(
            "timed out after {} ms: the program was killed",
            result.duration_ms
        )
    } else if result.oom_killed {
        "killed: the program ran out of memory".to_string()
    } else {
        format!("exit code {}", result.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: serde_json::Value) -> Result<ExecutePythonArgs, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn input_data_becomes_one_stdin_buffer_of_lines() {
        let parsed = args(serde_json::json!({"code": "", "inputData": ["a", "", "é"]})).unwrap();
        assert_eq!(parsed.input_data.0.bytes, "a\n\né\n".as_bytes());
        assert_eq!(parsed.input_data.0.lines, 3);
        for absent in [
            serde_json::json!({"code": ""}),
            serde_json::json!({"code": "", "inputData": null}),
            serde_json::json!({"code": "", "inputData": []}),
        ] {
            assert!(args(absent).unwrap().input_data.0.bytes.is_empty());
        }
    }

    #[test]
    fn input_data_past_its_entry_cap_or_not_strings_is_refused() {
        let lines = vec![serde_json::Value::String(String::new()); MAX_INPUT_LINES + 1];
        let error = args(serde_json::json!({"code": "", "inputData": lines})).unwrap_err();
        assert!(
            error.to_string().contains("more than 100000 entries"),
            "{error}"
        );
        let lines = vec![serde_json::Value::String(String::new()); MAX_INPUT_LINES];
        assert!(args(serde_json::json!({"code": "", "inputData": lines})).is_ok());
        for bad in [
            serde_json::json!(["a", 1]),
            serde_json::json!("a"),
            serde_json::json!([["a"]]),
        ] {
            assert!(args(serde_json::json!({"code": "", "inputData": bad})).is_err());
        }
    }
}
