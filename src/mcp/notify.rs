//! One bounded, coalescing notifier for what a call tells its client while it runs: a running
//! program's output, and pip's output during an install.
//!
//! Both arrive at any rate and in any amount (an install may print tens of thousands of
//! lines). A [`Coalescer`] takes each piece without ever waiting (the output path must not
//! slow down) into a bounded store, and one task sends what has gathered as one message: what
//! does not fit is counted and said, so server memory stays flat whatever the program or pip
//! prints. What is gathered, and how often it is sent, is its [`Gather`]:
//! - [`Output`] (live output): a message every [`EVERY`], each at most [`MAX_MESSAGE`] bytes,
//!   at most [`MAX_TOTAL`] bytes per call, and after [`HEARTBEAT`] of silence a message that
//!   says the program is still running (so a client that gives up on silent calls keeps
//!   waiting). The final answer carries the whole output either way.
//! - [`Lines`] (pip): a per-install budget ([`MAX_LINES`], [`MAX_BYTES`]), at most a small
//!   queue of lines waiting, sent as soon as the task is free in batches of about 4 KiB; the
//!   count of lines not shown is sent last.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::executor::{LineRelay, OutputRelay};
use crate::sandbox::{Stream, complete_prefix_len};

/// How often gathered output is sent.
pub const EVERY: Duration = Duration::from_millis(300);
/// Longest silence before a message that says the program is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Largest text of one message of output.
pub const MAX_MESSAGE: usize = 8 << 10;
/// Largest text sent live per call; the rest is only in the answer.
pub const MAX_TOTAL: usize = 1 << 20;

/// Lines of pip output forwarded per install.
pub const MAX_LINES: usize = 400;
/// Bytes of pip output forwarded per install.
pub const MAX_BYTES: usize = 64 << 10;
/// Longest single line forwarded; the rest of it is cut.
const MAX_LINE: usize = 1 << 10;
/// Lines waiting for the sending task.
const QUEUE: usize = 64;
/// A notification carries queued lines up to about this many bytes.
const BATCH: usize = 4 << 10;

/// What a [`Coalescer`] holds between messages, and what it makes of it.
pub trait Gather: Default + Send + 'static {
    /// At most one message this often; `None`: as soon as anything has gathered.
    const EVERY: Option<Duration>;
    /// The next message from what has gathered, if any.
    fn take(&mut self) -> Option<String>;
    /// A message after `silent` without one, `running` since the start, if one is due.
    fn idle(&self, _silent: Duration, _running: Duration) -> Option<String> {
        None
    }
    /// The last message, once everything gathered was sent.
    fn closing(&mut self) -> Option<String> {
        None
    }
}

/// One call's notifier: a bounded store and the one task that sends from it.
pub struct Coalescer<G: Gather> {
    gathered: Arc<Mutex<G>>,
    /// Wakes the task when there is something to send at once.
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl<G: Gather> Coalescer<G> {
    /// Starts the sending task; `send` delivers one message.
    pub fn start<F, Fut>(send: F) -> Self
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let gathered = Arc::new(Mutex::new(G::default()));
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay(gathered.clone(), wake.clone(), stop.clone(), send));
        Self {
            gathered,
            wake,
            stop,
            task,
        }
    }

    /// Changes what has gathered; never waits for the client.
    fn gather(&self, change: impl FnOnce(&mut G)) {
        change(&mut lock(&self.gathered));
        if G::EVERY.is_none() {
            self.wake.notify_one();
        }
    }

    /// Sends what is still gathered, then the closing message, and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl<G: Gather> Drop for Coalescer<G> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<G>(gathered: &Mutex<G>) -> std::sync::MutexGuard<'_, G> {
    gathered.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending task: at each tick (or wake), what has gathered (one message per tick when
/// paced, all of it otherwise); a message when idle too long; at the stop, the last of it and
/// the closing message.
async fn relay<G, F, Fut>(
    gathered: Arc<Mutex<G>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    send: F,
) where
    G: Gather,
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        let stopping = tokio::select! {
            () = tick::<G>(&wake) => false,
            () = stop.cancelled() => true,
        };
        let mut sent = false;
        loop {
            let message = lock(&gathered).take();
            let Some(message) = message else { break };
            send(message).await;
            sent = true;
            if G::EVERY.is_some() {
                break;
            }
        }
        if sent {
            last = Instant::now();
        } else if !stopping {
            let idle = lock(&gathered).idle(last.elapsed(), started.elapsed());
            if let Some(message) = idle {
                send(message).await;
                last = Instant::now();
            }
        }
        if stopping {
            let closing = lock(&gathered).closing();
            if let Some(message) = closing {
                send(message).await;
            }
            return;
        }
    }
}

/// Resolves when the task should look at what has gathered.
async fn tick<G: Gather>(wake: &Notify) {
    match G::EVERY {
        Some(every) => tokio::time::sleep(every).await,
        None => wake.notified().await,
    }
}

/// A running program's output gathered since the last message.
#[derive(Default)]
pub struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes that did not fit since the last message.
    skipped: u64,
    /// Bytes taken to be sent so far: the per-call budget.
    used: usize,
}

/// One call's live output.
pub type Live = Coalescer<Output>;

impl Gather for Output {
    const EVERY: Option<Duration> = Some(EVERY);

    /// The message for what has gathered, if anything: stdout's text, then stderr's marked as
    /// such, then how much did not fit. Bytes that may be the start of a character cut by the
    /// chunking wait for the next message.
    fn take(&mut self) -> Option<String> {
        let mut message = String::new();
        for (label, bytes) in [("", &mut self.stdout), ("[stderr] ", &mut self.stderr)] {
            let complete = complete_prefix_len(bytes);
            if complete == 0 {
                continue;
            }
            let text: Vec<u8> = bytes.drain(..complete).collect();
            message.push_str(label);
            message.push_str(&String::from_utf8_lossy(&text));
        }
        if self.skipped > 0 {
            if !message.is_empty() && !message.ends_with('\n') {
                message.push('\n');
            }
            message.push_str(&format!(
                "(... {} bytes not shown live; the answer has them)",
                self.skipped
            ));
            self.skipped = 0;
        }
        (!message.is_empty()).then_some(message)
    }

    fn idle(&self, silent: Duration, running: Duration) -> Option<String> {
        (silent >= HEARTBEAT).then(|| format!("(still running: {} s)", running.as_secs()))
    }
}

impl Output {
    /// Takes what fits of a chunk: within [`MAX_MESSAGE`] waiting, [`MAX_TOTAL`] per call.
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let pending = self.stdout.len() + self.stderr.len();
        let room = MAX_MESSAGE
            .saturating_sub(pending)
            .min(MAX_TOTAL.saturating_sub(self.used));
        let taken = bytes.len().min(room);
        self.used += taken;
        self.skipped += (bytes.len() - taken) as u64;
        let target = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        target.extend_from_slice(&bytes[..taken]);
    }
}

impl OutputRelay for Live {
    fn push(&self, stream: Stream, bytes: &[u8]) {
        self.gather(|output| output.push(stream, bytes));
    }

    async fn finish(self) {
        Coalescer::finish(self).await;
    }
}

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

/// pip's lines waiting to be sent, within the install's budget.
#[derive(Default)]
pub struct Lines {
    queue: VecDeque<String>,
    budget: Budget,
}

/// One install's pip output.
pub type PipLines = Coalescer<Lines>;

impl Gather for Lines {
    const EVERY: Option<Duration> = None;

    /// The queued lines, joined by newlines, up to about [`BATCH`] bytes.
    fn take(&mut self) -> Option<String> {
        let mut batch = self.queue.pop_front()?;
        while batch.len() < BATCH {
            let Some(line) = self.queue.pop_front() else {
                break;
            };
            batch.push('\n');
            batch.push_str(&line);
        }
        Some(batch)
    }

    /// How many lines were left out.
    fn closing(&mut self) -> Option<String> {
        let skipped = self.budget.skipped;
        (skipped > 0).then(|| format!("({skipped} more lines of pip output not shown)"))
    }
}

impl Lines {
    /// Queues one line (cut to [`MAX_LINE`]) within the budget and the queue's room.
    fn push(&mut self, line: &str) {
        let line = cut(line, MAX_LINE);
        if !self.budget.admit(line.len()) {
            return;
        }
        if self.queue.len() >= QUEUE {
            self.budget.skipped += 1;
            return;
        }
        self.queue.push_back(line.to_string());
    }
}

impl LineRelay for PipLines {
    fn line(&self, line: &str) {
        self.gather(|lines| lines.push(line));
    }

    async fn finish(self) {
        Coalescer::finish(self).await;
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

    fn collect() -> (Arc<Mutex<Vec<String>>>, Live) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let live = Live::start({
            let sent = sent.clone();
            move |message| {
                sent.lock().unwrap().push(message);
                async {}
            }
        });
        (sent, live)
    }

    #[tokio::test(start_paused = true)]
    async fn output_is_coalesced_into_a_few_messages_a_second() {
        let (sent, live) = collect();
        for i in 0..1000 {
            live.push(Stream::Stdout, format!("{i}\n").as_bytes());
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        live.push(Stream::Stderr, b"oops\n");
        live.finish().await;
        let sent = sent.lock().unwrap();
        assert!(sent.len() <= 5, "{}", sent.len());
        let all = sent.join("");
        assert!(all.starts_with("0\n1\n"));
        assert!(all.contains("999\n"));
        assert!(all.ends_with("[stderr] oops\n"), "{all}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_bounded_per_message_and_per_call() {
        let (sent, live) = collect();
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..100 {
            live.push(Stream::Stdout, &chunk);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        live.finish().await;
        let sent = sent.lock().unwrap();
        assert!(sent.iter().all(|m| m.len() <= MAX_MESSAGE + 100));
        let shown: usize = sent.iter().map(|m| m.matches('x').count()).sum();
        assert!(shown <= MAX_TOTAL);
        assert!(sent.last().unwrap().contains("bytes not shown live"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_program_still_gets_a_message_now_and_then() {
        let (sent, live) = collect();
        tokio::time::sleep(HEARTBEAT * 3 + EVERY * 5).await;
        live.finish().await;
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert!(sent[0].starts_with("(still running: "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_character_split_across_chunks_arrives_whole() {
        let (sent, live) = collect();
        let euro = "€".as_bytes();
        live.push(Stream::Stdout, &euro[..1]);
        tokio::time::sleep(EVERY * 2).await;
        live.push(Stream::Stdout, &euro[1..]);
        live.finish().await;
        assert_eq!(sent.lock().unwrap().join(""), "€");
    }

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
        let forwarder = PipLines::start({
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
        LineRelay::finish(forwarder).await;
        let mut sent = sent.lock().unwrap();
        // The closing message says how many lines were not forwarded.
        let closing = sent.pop().unwrap();
        let skipped: u64 = closing
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(" more lines of pip output not shown)"))
            .unwrap_or_else(|| panic!("{closing}"))
            .parse()
            .unwrap();
        let lines: usize = sent.iter().map(|b| b.lines().count()).sum();
        assert!(lines <= MAX_LINES, "{lines} lines forwarded");
        assert!(sent.len() <= lines, "batches never outnumber lines");
        assert_eq!(lines as u64 + skipped, 100_000);
        assert!(sent[0].starts_with("Collecting package-0"));
    }
}
