//! Live output: what a running program prints, on its way to the client while it runs.
//!
//! Output arrives in chunks of any size and at any rate. A [`Live`] collects them without
//! ever waiting (the output path must not slow down), and one task sends what has gathered
//! every [`EVERY`] as one message: at most a few messages a second, each at most
//! [`MAX_MESSAGE`] bytes, at most [`MAX_TOTAL`] bytes per call. What does not fit is counted
//! and said. A silent program still gets a message every [`HEARTBEAT`], so a client that gives
//! up on silent calls keeps waiting. The final answer carries the whole output either way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sandbox::{Stream, complete_prefix_len};

/// How often gathered output is sent.
pub const EVERY: Duration = Duration::from_millis(300);
/// Longest silence before a message that says the program is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Largest text of one message.
pub const MAX_MESSAGE: usize = 8 << 10;
/// Largest text sent live per call; the rest is only in the answer.
pub const MAX_TOTAL: usize = 1 << 20;

/// Output gathered since the last message.
#[derive(Default)]
struct Gathered {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes that did not fit since the last message.
    skipped: u64,
    /// Bytes taken to be sent so far: the per-call budget.
    used: usize,
}

/// One call's live output.
pub struct Live {
    gathered: Arc<Mutex<Gathered>>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
}

impl Live {
    /// Starts the sending task; `send` delivers one message.
    pub fn start<F, Fut>(send: F) -> Self
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let gathered = Arc::new(Mutex::new(Gathered::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let gathered = gathered.clone();
            let stop = stop.clone();
            async move {
                let started = Instant::now();
                let mut last = Instant::now();
                loop {
                    let stopping = tokio::select! {
                        () = tokio::time::sleep(EVERY) => false,
                        () = stop.cancelled() => true,
                    };
                    let message = take_message(&gathered);
                    if let Some(message) = message {
                        send(message).await;
                        last = Instant::now();
                    } else if !stopping && last.elapsed() >= HEARTBEAT {
                        send(format!(
                            "(still running: {} s)",
                            started.elapsed().as_secs()
                        ))
                        .await;
                        last = Instant::now();
                    }
                    if stopping {
                        return;
                    }
                }
            }
        });
        Self {
            gathered,
            task,
            stop,
        }
    }

    /// Takes a chunk of output; never waits for the client.
    pub fn push(&self, stream: Stream, bytes: &[u8]) {
        let mut gathered = self.gathered.lock().unwrap_or_else(|e| e.into_inner());
        let pending = gathered.stdout.len() + gathered.stderr.len();
        let room = MAX_MESSAGE
            .saturating_sub(pending)
            .min(MAX_TOTAL.saturating_sub(gathered.used));
        let taken = bytes.len().min(room);
        gathered.used += taken;
        gathered.skipped += (bytes.len() - taken) as u64;
        let target = match stream {
            Stream::Stdout => &mut gathered.stdout,
            Stream::Stderr => &mut gathered.stderr,
        };
        target.extend_from_slice(&bytes[..taken]);
    }

    /// Sends what is still gathered and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The message for what has gathered, if anything: stdout's text, then stderr's marked as
/// such, then how much did not fit. Bytes that may be the start of a character cut by the
/// chunking wait for the next message.
fn take_message(gathered: &Mutex<Gathered>) -> Option<String> {
    let mut gathered = gathered.lock().unwrap_or_else(|e| e.into_inner());
    let mut message = String::new();
    let Gathered { stdout, stderr, .. } = &mut *gathered;
    for (label, bytes) in [("", stdout), ("[stderr] ", stderr)] {
        let complete = complete_prefix_len(bytes);
        if complete == 0 {
            continue;
        }
        let text: Vec<u8> = bytes.drain(..complete).collect();
        message.push_str(label);
        message.push_str(&String::from_utf8_lossy(&text));
    }
    if gathered.skipped > 0 {
        if !message.is_empty() && !message.ends_with('\n') {
            message.push('\n');
        }
        message.push_str(&format!(
            "(... {} bytes not shown live; the answer has them)",
            gathered.skipped
        ));
        gathered.skipped = 0;
    }
    (!message.is_empty()).then_some(message)
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
}
