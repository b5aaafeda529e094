//! What the tools answer, as MCP content: an execution as labelled text blocks plus its
//! typed status (a session's fate and notes added), install reports, package lists, the
//! session just opened, and the fixed answers of refusals.

use crate::egress::summary;
use rmcp::model::{CallToolResult, ContentBlock};

use super::args::{ExecutionStatus, InstalledPackage, PackageList};
use super::describe::minutes;
use crate::executor::{InSession, Packages};
use crate::image::{EnvState, InstallReport};
use crate::sandbox::{ExecutionResult, SessionEnd, SessionInfo, fit_both};
use crate::settings::SandboxConfig;

/// The answer to install_packages from a token without the permission.
pub const INSTALL_NOT_GRANTED: &str = "install_packages is not allowed for your token: every \
     caller of this server runs code in the environment it would change, so installs are \
     given per token\n\
     hint: use the packages already installed (list_packages), or ask the server's operator \
     to add `install` after your token in the tokens file (--http-tokens)";

/// The answer to install_packages on a server started with `--no-install`.
pub const INSTALLS_OFF: &str = "install_packages is turned off on this server (--no-install / \
     PYEXEC_NO_INSTALL)\n\
     hint: use the packages already installed (list_packages); the operator chooses them \
     with PREINSTALLED_PACKAGES";

/// The answer to execute_python cancelled while it waited for the preinstall.
pub const CANCELLED_WAITING: &str =
    "the call was cancelled while it waited for PREINSTALLED_PACKAGES; nothing ran";

/// The answer to create_session cancelled while it waited for the preinstall.
pub const CANCELLED_OPENING: &str = "the call was cancelled while it waited for \
     PREINSTALLED_PACKAGES; no session was opened";

/// A tool's error answer: one text block.
pub fn error_text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

/// An execution's answer, before what it handed back: the streams and status
/// ([`render`]), the preinstall's note first, and for a session's call its fate (in the
/// structured status) and notes last.
pub fn execution(
    result: ExecutionResult,
    note: Option<String>,
    session: Option<InSession>,
    config: &SandboxConfig,
) -> CallToolResult {
    let session_notes = session.map(|session| session_notes(&result, session, config));
    let mut answer = render(result, config.outputs.max_answer_bytes);
    if let Some(note) = note {
        answer.content.insert(0, ContentBlock::text(note));
    }
    if let Some((ended, notes)) = session_notes {
        if let Some(serde_json::Value::Object(status)) = answer.structured_content.as_mut() {
            status.insert("session_ended".into(), serde_json::json!(ended));
        }
        if !notes.is_empty() {
            answer.content.push(ContentBlock::text(notes.join("\n")));
        }
    }
    answer
}

/// What the answer of a session's call says about the session: whether it goes on (and
/// the reason when it does not), and, for a failed import in a session older than the
/// last install, that a new session would see the new packages.
fn session_notes(
    result: &ExecutionResult,
    session: InSession,
    config: &SandboxConfig,
) -> (Option<SessionEnd>, Vec<String>) {
    let limits = &config.limits;
    let lost = "Its state is gone; call create_session for a new session and run what it \
                needs again.";
    let mut notes = Vec::new();
    let ended = session.ended;
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
            config.sessions.max_age.as_secs()
        )),
        Some(SessionEnd::ShuttingDown | SessionEnd::Lost) => notes.push(format!(
            "The session has ended: its container stopped unexpectedly. {lost}"
        )),
    }
    if session.stale_import {
        notes.push(
            "This session started before the last install_packages: it keeps the \
             packages it started with, so packages installed since are not importable \
             here. A new session (create_session) sees them."
                .to_string(),
        );
    }
    (ended, notes)
}

/// `create_session`'s answer: the text (after the preinstall's note) and the structured
/// session info.
pub fn session_opened(
    info: &SessionInfo,
    note: Option<String>,
    config: &SandboxConfig,
) -> CallToolResult {
    let mut text = render_session(info, config);
    if let Some(note) = note {
        text = format!("{note}\n{text}");
    }
    let mut answer = CallToolResult::success(vec![ContentBlock::text(text)]);
    answer.structured_content = serde_json::to_value(info).ok();
    answer
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

/// `list_packages`' answer: the list, and a line for the install running now.
pub fn packages(packages: &Packages) -> CallToolResult {
    let mut answer = render_package_list(&packages.state);
    if let Some((specs, running)) = &packages.installing {
        answer.content.push(ContentBlock::text(format!(
            "An install is in progress ({}, {} s so far): those packages are not \
             listed until it ends.",
            specs.join(" "),
            running.as_secs()
        )));
    }
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
    if let Some(line) = result.egress.as_deref().and_then(summary) {
        content.push(ContentBlock::text(line));
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
        egress: result.egress,
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
