//! The registry of open sessions: the limits on them (`--max-sessions` in all and per token),
//! opening one ([`Sessions::create`]), finding one for its owner, closing one, and ending the
//! idle and the old (the expiry task, every second) and, at shutdown, all of them.
//!
//! A session ends when its interpreter does (`exit()`, a crash, the OOM killer), when an
//! interrupted call does not stop within the runner's grace, on `close_session`, when idle
//! past `--session-idle` or older than `--session-max-age`, and at shutdown. Should the
//! server die instead, the runner sees its stdin close (or its idle time pass) and exits with
//! "no payload", and any server's reaper removes it. One call in a session is
//! `session_call.rs`; one session is `session.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::launcher::Launcher;
use super::session::{Session, SessionEnd, SessionInfo, freeze};
use super::slots::Slots;
use super::types::SandboxError;
use crate::settings::SessionConfig;

/// How often the expiry task looks for idle and old sessions.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// The open sessions of one sandbox, and the limit on them.
pub(super) struct Sessions {
    config: SessionConfig,
    open: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions being created, by owner: they count against the limits already.
    starting: Mutex<HashMap<Option<String>, usize>>,
}

impl Sessions {
    pub fn new(config: SessionConfig) -> Self {
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
    pub fn count(&self) -> usize {
        self.open().len()
    }

    /// Opens a session: one container of the image `current_image` names once the session
    /// has its slot, started now, whose interpreter keeps its state between calls. It counts
    /// against the concurrency limit only while it starts (and later while a call runs);
    /// against `--max-sessions` until it ends.
    pub async fn create(
        &self,
        launcher: &Launcher,
        slots: &Slots,
        current_image: &(dyn Fn() -> Arc<str> + Send + Sync),
        owner: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<SessionInfo, SandboxError> {
        self.expire();
        let reserved = self.reserve(owner)?;
        let permit = slots.acquire(cancel, 0).await?;
        let image = current_image();
        let (guard, streams) = tokio::select! {
            started = launcher.start_session(&image) => started?,
            _ = cancel.cancelled() => return Err(SandboxError::Cancelled),
            _ = launcher.stopping().cancelled() => return Err(SandboxError::ShuttingDown),
        };
        // Frozen until its first call, like between any two calls.
        freeze(launcher.docker().await?, guard.name()).await;
        drop(permit);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let session = Arc::new(Session::new(guard, streams, owner, image));
        self.open().insert(id.clone(), session);
        drop(reserved);
        // Shutdown may have ended every session while this one started.
        if launcher.stopping().is_cancelled() {
            self.close(&id, SessionEnd::ShuttingDown);
            return Err(SandboxError::ShuttingDown);
        }
        let config = launcher.config();
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
    pub fn close_owned(&self, id: &str, owner: Option<&str>) -> Result<(), SandboxError> {
        self.get(id, owner)?;
        self.close(id, SessionEnd::Closed);
        Ok(())
    }

    /// Keeps closing idle and old sessions, every second, until `stopping`.
    pub async fn keep_expiring(&self, stopping: &CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EXPIRE_EVERY) => self.expire(),
                _ = stopping.cancelled() => return,
            }
        }
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
    pub fn get(&self, id: &str, owner: Option<&str>) -> Result<Arc<Session>, SandboxError> {
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
    pub fn close(&self, id: &str, why: SessionEnd) {
        if let Some(session) = self.open().remove(id) {
            session.end(why);
        }
    }

    /// Ends idle and old sessions (an idle one only between calls; an old one even mid-call)
    /// and forgets ended ones.
    pub fn expire(&self) {
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
    pub fn end_all(&self) {
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
