//! What a tool call carries besides its arguments, and where its notifications go.
//!
//! From the request: the caller (the bearer token's owner and grants, set by `transport/http.rs`; none
//! on stdio), the HTTP session it came in on (for the log), and of `_meta` only the progress
//! token. A [`Notifier`] sends one call's messages as progress notifications when the client
//! gave a token, else as log notifications at or above the level the client set; it is the
//! call's [`Watcher`], starting the [`notify`](super::notify) coalescers the executor asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rmcp::model::{Extensions, ProgressNotificationParam, ProgressToken, RequestMetaObject};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{Peer, RoleServer};

use super::notify::{Live, PipLines};
use crate::auth::TokenOwner;
use crate::executor::Watcher;

/// The longest progress token honoured, as JSON; a longer one is ignored (no live output).
const MAX_PROGRESS_TOKEN: usize = 256;

/// Log notifications sent until the client picks a level: pip's progress and notices, not
/// debugging chatter.
#[allow(deprecated)]
pub const DEFAULT_LOG_LEVEL: LoggingLevel = LoggingLevel::Info;

/// Who made the call: the bearer token's owner (its digest, which owns the sessions made with
/// it, and what it may do beyond running code), set by `transport/http.rs` once the token is accepted;
/// `None` on stdio and without authentication (one user: everything).
pub fn caller(extensions: &Extensions) -> Option<TokenOwner> {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<TokenOwner>())
        .cloned()
}

/// The HTTP session a call came in on (`Mcp-Session-Id`), or `stdio`.
pub fn session_of(extensions: &Extensions) -> String {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|id| id.to_str().ok())
        .map_or_else(|| "stdio".to_string(), |id| id.chars().take(64).collect())
}

/// A level's rank, least severe first (RFC 5424 order, as MCP uses it).
#[allow(deprecated)]
pub fn severity(level: LoggingLevel) -> u8 {
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
    level: Arc<AtomicU8>,
}

impl Logger {
    #[allow(deprecated)]
    async fn log(&self, level: LoggingLevel, logger: &str, message: String) {
        if severity(level) < self.level.load(Ordering::Relaxed) {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, message.into()).with_logger(logger);
        let _ = self.peer.notify_logging_message(param).await;
    }
}

/// Sends one call's messages as progress or log notifications.
#[derive(Clone)]
pub struct Notifier {
    /// The client's progress token, if it sent one.
    token: Option<ProgressToken>,
    /// Where notifications go.
    peer: Peer<RoleServer>,
    /// Where messages go when there is no token.
    logger: Logger,
    /// Messages sent so far: the progress value.
    sent: Arc<AtomicU64>,
}

impl Notifier {
    /// Where one call's progress (or, without a progress token, log) notifications go.
    /// Takes the request's `_meta` by value and keeps only its progress token (one of at most
    /// [`MAX_PROGRESS_TOKEN`] bytes): the rest of `_meta`, which a client may make megabytes
    /// long, is not held while the call waits and runs.
    pub fn new(meta: RequestMetaObject, peer: Peer<RoleServer>, level: Arc<AtomicU8>) -> Self {
        let token = meta.get_progress_token().filter(|token| {
            let size = serde_json::to_vec(token).map_or(usize::MAX, |json| json.len());
            size <= MAX_PROGRESS_TOKEN
        });
        drop(meta);
        Self {
            token,
            logger: Logger {
                peer: peer.clone(),
                level,
            },
            peer,
            sent: Arc::default(),
        }
    }

    // MCP logging is deprecated by SEP-2577, but clients on earlier protocol versions (Claude
    // Desktop among them) still use it, and without a progress token it is the only sign of life.
    #[allow(deprecated)]
    pub async fn send(&self, message: String) {
        let count = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
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

impl Watcher for Notifier {
    type Output = Live;
    type Lines = PipLines;

    async fn notice(&self, message: String) {
        self.send(message).await;
    }

    /// With a progress token, output reaches the client while the program runs.
    fn output(&self) -> Option<Live> {
        let notifier = self.clone();
        self.token.is_some().then(|| {
            Live::start(move |message| {
                let notifier = notifier.clone();
                async move { notifier.send(message).await }
            })
        })
    }

    /// pip's output as progress notifications when the client asked for progress (a token),
    /// and as log notifications otherwise, so a desktop client sees the install is alive.
    fn lines(&self) -> PipLines {
        let notifier = self.clone();
        PipLines::start(move |batch| {
            let notifier = notifier.clone();
            async move { notifier.send(batch).await }
        })
    }
}
