//! What a request may cost the server before rmcp parses it, checked at both transports' edge.
//!
//! rmcp turns each message into a `serde_json::Value` tree (over HTTP it also copies the
//! tree once more to check the standard headers), and a tree costs its parser far more than
//! its bytes on the wire: twelve megabytes of empty strings (`["","",…]`, four million
//! values) took the server from 14 to 758 MiB. So a message's values are counted first, in a
//! pass that allocates nothing, and a message with more than [`MAX_REQUEST_VALUES`] is
//! refused before any tree exists. Over HTTP, large bodies are also read under a byte budget
//! shared by every connection, with a part per token (`Intake`), so only so many are being
//! parsed at once and no token's slow bodies can stall the other tokens' requests.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::sandbox::MAX_INPUT_LINES;

/// Most JSON values (each string, number, array, object, object key…) one message may hold:
/// `inputData`'s entries and room for everything else a request carries.
pub const MAX_REQUEST_VALUES: usize = MAX_INPUT_LINES + 4096;

/// How long an HTTP client has to send a whole request body once its head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a message was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "request too large: it holds more than {max} JSON values (inputData is at most \
         {MAX_INPUT_LINES} lines); send fewer entries per call or read the data from code",
        max = MAX_REQUEST_VALUES
    )]
    TooManyValues,
    #[error("request is not valid JSON: {0}")]
    NotJson(String),
}

/// Checks that `message` is one JSON value with at most `max` values in it, without building
/// it: strings are read in place (or unescaped into one reused buffer), nothing is kept.
pub fn check_values(message: &[u8], max: usize) -> Result<(), Refused> {
    let left = Cell::new(max);
    let exceeded = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(message);
    let counted = Counter {
        left: &left,
        exceeded: &exceeded,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    match counted {
        Ok(()) => Ok(()),
        Err(_) if exceeded.get() => Err(Refused::TooManyValues),
        Err(error) => Err(Refused::NotJson(error.to_string())),
    }
}

/// Counts one value (and, inside it, every value it holds) against `left`.
#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Counter<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.take()?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// Bodies declared this small are read without a share of the budget: what they can hold is
/// bounded by the connection caps, and a call's code is usually this small.
pub const SMALL_BODY: usize = 256 << 10;

/// The bytes of large HTTP request bodies being read and parsed at once, across all
/// connections, and per token. A body takes its whole share before it is read (its declared
/// length; the largest body's worth when it declares none), waiting for room while others are
/// parsed, and keeps it until rmcp has taken the message. One token may hold at most the
/// largest body's worth, so a token whose bodies are slow (or stalled on purpose) holds its
/// own part only: the other tokens' bodies go on being read.
#[derive(Debug, Clone)]
pub struct Intake {
    held: Arc<std::sync::Mutex<Held>>,
    /// Woken whenever a share is given back.
    released: Arc<tokio::sync::Notify>,
    /// The budget in all.
    capacity: usize,
    /// The most one token (owner) may hold.
    per_owner: usize,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_owner: std::collections::HashMap<String, usize>,
}

impl Intake {
    /// A budget of two of the largest bodies (at least 32 MiB), of which one token may hold
    /// one largest body's worth.
    pub fn for_bodies_up_to(max_body: usize) -> Self {
        Self {
            held: Arc::default(),
            released: Arc::default(),
            capacity: (2 * max_body).max(32 << 20),
            per_owner: max_body.max(SMALL_BODY),
        }
    }

    /// A share of `size` bytes (at most one token's part) for a body of `owner`'s, once the
    /// budget and the owner's part have room for all of it at once (never a part of it, so
    /// bodies waiting for more cannot hold each other up).
    pub async fn share(&self, owner: &str, size: usize) -> Share {
        let size = size.min(self.per_owner);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(share) = self.try_share(owner, size) {
                return share;
            }
            released.await;
        }
    }

    fn try_share(&self, owner: &str, size: usize) -> Option<Share> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let own = held.by_owner.get(owner).copied().unwrap_or(0);
        if held.total + size > self.capacity || own + size > self.per_owner {
            return None;
        }
        held.total += size;
        *held.by_owner.entry(owner.to_string()).or_default() += size;
        Some(Share {
            intake: self.clone(),
            owner: owner.to_string(),
            bytes: size,
        })
    }
}

/// One body's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct Share {
    intake: Intake,
    owner: String,
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        {
            let mut held = self.intake.held.lock().unwrap_or_else(|e| e.into_inner());
            held.total -= self.bytes;
            if let Some(own) = held.by_owner.get_mut(&self.owner) {
                *own -= self.bytes;
                if *own == 0 {
                    held.by_owner.remove(&self.owner);
                }
            }
        }
        self.intake.released.notify_waiters();
    }
}

/// The `"id"` of a request that could not be parsed whole: the first `"id":` followed by a
/// number or a string, in a message that also has a `"method"` (so responses never get one).
pub fn request_id(line: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(line);
    if !text.contains("\"method\"") {
        return None;
    }
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("\"id\"") {
        rest = &rest[at + 4..];
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let mut tokens =
            serde_json::Deserializer::from_str(value.trim_start()).into_iter::<Value>();
        if let Some(Ok(id @ (Value::Number(_) | Value::String(_)))) = tokens.next() {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_ids_are_found_in_broken_requests_only() {
        let broken =
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"code":"\ud800"}}"#;
        assert_eq!(request_id(broken), Some(json!(7)));
        let named = br#"{"method":"x","params":{},"id" : "abc"#;
        assert_eq!(request_id(named), None, "a cut-off string is not an id");
        let named = br#"{"method":"x","id" : "abc", "params": "#;
        assert_eq!(request_id(named), Some(json!("abc")));
        assert_eq!(request_id(br#"{"jsonrpc":"2.0","id":7,"result":{"#), None);
        assert_eq!(request_id(b"garbage"), None);
    }

    #[tokio::test]
    async fn a_token_holds_its_part_only_and_waiters_get_room_when_it_is_given_back() {
        let intake = Intake::for_bodies_up_to(20 << 20);
        assert_eq!((intake.capacity, intake.per_owner), (40 << 20, 20 << 20));
        let alice = intake.share("alice", 15 << 20).await;
        assert!(
            intake.try_share("alice", 6 << 20).is_none(),
            "her part is taken"
        );
        let bob = intake.share("bob", 20 << 20).await;
        assert!(
            intake.try_share("carol", 6 << 20).is_none(),
            "the budget is taken"
        );
        let carol = tokio::spawn({
            let intake = intake.clone();
            async move { intake.share("carol", 6 << 20).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!carol.is_finished(), "carol waits for room");
        drop(alice);
        let carol = tokio::time::timeout(std::time::Duration::from_secs(5), carol)
            .await
            .expect("room comes back to a waiter")
            .unwrap();
        drop((bob, carol));
        let held = intake.held.lock().unwrap();
        assert_eq!((held.total, held.by_owner.len()), (0, 0), "all given back");
    }

    #[test]
    fn values_are_counted_everywhere_in_the_message() {
        let message = br#"{"a": [1, "x", null, {"b": true}], "c": -2.5}"#;
        // The object, a, the array, 1, "x", null, the inner object, b, true, c, -2.5.
        assert_eq!(check_values(message, 11), Ok(()));
        assert_eq!(check_values(message, 10), Err(Refused::TooManyValues));
    }

    #[test]
    fn a_flood_of_empty_strings_is_refused_without_being_built() {
        let mut message = b"[".to_vec();
        for _ in 0..(MAX_REQUEST_VALUES + 1) {
            message.extend_from_slice(b"\"\",");
        }
        message.extend_from_slice(b"\"\"]");
        assert_eq!(
            check_values(&message, MAX_REQUEST_VALUES),
            Err(Refused::TooManyValues)
        );
    }

    #[test]
    fn what_is_not_one_json_value_is_refused_as_such() {
        for bad in [&br#"{"a": "\ud800"}"#[..], b"{\"a\": 1} {}", b"[1, 2", b""] {
            assert!(
                matches!(check_values(bad, 100), Err(Refused::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(check_values(br#" {"a": "\u00e9\n"} "#, 100), Ok(()));
    }
}
