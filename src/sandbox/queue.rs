//! The calls waiting for their turn -- for a concurrency slot, for a session's running call
//! to end, or for `PREINSTALLED_PACKAGES` -- bounded in number (`--max-queue`) and in the bytes
//! of code and input they hold (`--max-queue-bytes`), so that what waiting calls cost the
//! server is known in advance whatever the requests look like. A call over either bound is
//! answered busy at once instead of waiting.

use std::sync::Mutex;

/// What waiting calls hold now.
#[derive(Debug, Default)]
struct Held {
    /// Calls waiting.
    calls: usize,
    /// Bytes of code and input they hold.
    bytes: usize,
}

/// The waiting room: a count and a byte total, both capped.
#[derive(Debug)]
pub struct Queue {
    held: Mutex<Held>,
    /// Most calls waiting at once.
    max_calls: usize,
    /// Most bytes waiting calls may hold together; a lone call waits whatever its size.
    max_bytes: usize,
}

/// Why a call could not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `--max-queue` calls already wait.
    Calls { max: usize },
    /// The waiting calls hold `held` bytes; with this one they would pass `max`.
    Bytes { held: usize, max: usize },
}

impl Queue {
    pub fn new(max_calls: usize, max_bytes: usize) -> Self {
        Self {
            held: Mutex::default(),
            max_calls,
            max_bytes,
        }
    }

    /// A place for a call holding `bytes`, or why there is none. With no call waiting, a call
    /// larger than the byte cap still gets its place: it is bounded by `--max-input`.
    pub fn enter(&self, bytes: usize) -> Result<Place<'_>, Full> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.calls >= self.max_calls {
            return Err(Full::Calls {
                max: self.max_calls,
            });
        }
        if held.calls > 0 && held.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(Full::Bytes {
                held: held.bytes,
                max: self.max_bytes,
            });
        }
        held.calls += 1;
        held.bytes += bytes;
        Ok(Place { queue: self, bytes })
    }

    /// Calls waiting now.
    pub fn calls(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).calls
    }

    /// Bytes waiting calls hold now.
    pub fn bytes(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// One waiting call's place; given back when dropped (its turn came, or it gave up).
#[derive(Debug)]
pub struct Place<'a> {
    queue: &'a Queue,
    bytes: usize,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut held = self.queue.held.lock().unwrap_or_else(|e| e.into_inner());
        held.calls -= 1;
        held.bytes -= self.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_wait_while_both_the_count_and_the_bytes_fit() {
        let queue = Queue::new(3, 100);
        let first = queue.enter(60).unwrap();
        let _second = queue.enter(40).unwrap();
        assert_eq!(
            queue.enter(1).unwrap_err(),
            Full::Bytes {
                held: 100,
                max: 100
            }
        );
        drop(first);
        let _third = queue.enter(50).unwrap();
        assert_eq!((queue.calls(), queue.bytes()), (2, 90));
        let _fourth = queue.enter(10).unwrap();
        assert_eq!(queue.enter(0).unwrap_err(), Full::Calls { max: 3 });
    }

    #[test]
    fn a_lone_call_larger_than_the_byte_cap_still_waits() {
        let queue = Queue::new(3, 100);
        let big = queue.enter(500).unwrap();
        assert!(queue.enter(1).is_err(), "nothing joins it past the cap");
        drop(big);
        assert_eq!((queue.calls(), queue.bytes()), (0, 0));
    }

    #[test]
    fn no_queue_means_no_waiting() {
        let queue = Queue::new(0, 100);
        assert_eq!(queue.enter(1).unwrap_err(), Full::Calls { max: 0 });
    }
}
