//! pip's output on its way to the client: capped, coalesced, and through a bounded channel.
//!
//! An install may print tens of thousands of lines. Each one used to become its own
//! notification on its own task; now lines pass a per-install budget (lines and bytes), wait
//! in a small bounded channel, and one forwarding task sends whatever has queued up as one
//! notification. Lines past the budget, or that find the channel full, are counted, and the
//! count is sent last. Server memory stays flat whatever pip prints.

use std::sync::Mutex;

use tokio::sync::mpsc;

/// Lines of pip output forwarded per install.
pub const MAX_LINES: usize = 400;
/// Bytes of pip output forwarded per install.
pub const MAX_BYTES: usize = 64 << 10;
/// Longest single line forwarded; the rest of it is cut.
const MAX_LINE: usize = 1 << 10;
/// Lines waiting for the forwarder.
const QUEUE: usize = 64;
/// A notification carries queued lines up to about this many bytes.
const BATCH: usize = 4 << 10;

/// The per-install allowance: what has been let through, and what was not.
#[derive(Debug, Default)]
pub struct Budget {
    lines: usize,
    bytes: usize,
    /// Lines not forwarded (over the budget, or the queue was full).
    pub skipped: u64,
}

impl Budget {
    /// Admits one line of `len` bytes, or counts it as skipped.
    pub fn admit(&mut self, len: usize) -> bool {
        if self.lines >= MAX_LINES || self.bytes + len > MAX_BYTES {
            self.skipped += 1;
            return false;
        }
        self.lines += 1;
        self.bytes += len;
        true
    }
}

/// Forwards one install's output lines to `send`, one batch at a time.
pub struct Forwarder {
    queue: Option<mpsc::Sender<String>>,
    budget: Mutex<Budget>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Starts the forwarding task; `send` delivers one batch (lines joined by newlines).
    pub fn start<F, Fut>(send: F) -> Self
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, mut lines) = mpsc::channel::<String>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(first) = lines.recv().await {
                let mut batch = first;
                while batch.len() < BATCH {
                    let Ok(line) = lines.try_recv() else { break };
                    batch.push('\n');
                    batch.push_str(&line);
                }
                send(batch).await;
            }
        });
        Self {
            queue: Some(queue),
            budget: Mutex::new(Budget::default()),
            task,
        }
    }

    /// Offers one line; never waits.
    pub fn line(&self, line: &str) {
        let line = cut(line, MAX_LINE);
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if !budget.admit(line.len()) {
            return;
        }
        let sent = self
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send(line.to_string()).is_ok());
        if !sent {
            budget.skipped += 1;
        }
    }

    /// Waits until everything queued is sent; returns how many lines were not forwarded.
    pub async fn finish(mut self) -> u64 {
        self.queue.take();
        let _ = (&mut self.task).await;
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .skipped
    }
}

/// The longest prefix of `text` within `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_budget_stops_at_lines_or_bytes_and_counts_the_rest() {
        let mut budget = Budget::default();
        let admitted = (0..MAX_LINES + 50).filter(|_| budget.admit(10)).count();
        assert_eq!(admitted, MAX_LINES);
        assert_eq!(budget.skipped, 50);
        let mut bytes = Budget::default();
        assert!(bytes.admit(MAX_BYTES));
        assert!(!bytes.admit(1));
        assert_eq!(bytes.skipped, 1);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let text = "é".repeat(1000);
        let cut = cut(&text, MAX_LINE);
        assert!(cut.len() <= MAX_LINE && cut.len() >= MAX_LINE - 1);
    }

    #[tokio::test]
    async fn a_flood_becomes_a_few_batches_and_a_count() {
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let forwarder = Forwarder::start({
            let sent = sent.clone();
            move |batch| {
                let sent = sent.clone();
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    sent.lock().unwrap().push(batch);
                }
            }
        });
        for i in 0..100_000 {
            forwarder.line(&format!("Collecting package-{i}"));
        }
        let skipped = forwarder.finish().await;
        let sent = sent.lock().unwrap();
        let lines: usize = sent.iter().map(|b| b.lines().count()).sum();
        assert!(lines <= MAX_LINES, "{lines} lines forwarded");
        assert!(sent.len() <= lines, "batches never outnumber lines");
        assert_eq!(lines as u64 + skipped, 100_000);
        assert!(sent[0].starts_with("Collecting package-0"));
    }
}
