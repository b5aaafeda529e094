//! What goes into a container's stdin: the code and the program's own input, framed for the
//! runner (`runner.py`), and the size check that refuses an oversized request before Docker
//! is ever called.
//!
//! The rootfs is read-only, so code cannot be uploaded as a file; the runner reads a line with
//! the code's length and the call's token, then the code, and leaves the rest of stdin to the
//! program. The framing itself (and the trailer that comes back) is the runner's protocol
//! (`protocol.rs`); this module owns the request and its limits.

use super::protocol::{call_header, frame, session_header};
use super::types::SandboxError;

/// Most `inputData` entries a call may have: each is one line of stdin. Bounded in number as
/// well as in bytes (`--max-input`), since a JSON array of empty strings costs its parser far
/// more per entry than its three bytes on the wire.
pub const MAX_INPUT_LINES: usize = 100_000;

/// One call's code and stdin, held compactly: the stdin lines are joined (each ended by a
/// newline) as they are read from the request, so a call waiting for a slot holds about its
/// size in bytes, whatever the number of lines.
#[derive(Debug, Clone, Default)]
pub struct ExecutionRequest {
    /// Python source to run as `__main__`.
    pub code: String,
    /// The program's stdin: every input line with its newline, then EOF.
    pub stdin: Vec<u8>,
}

impl ExecutionRequest {
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            stdin: Vec::new(),
        }
    }

    /// The request with `lines` as stdin, each followed by a newline.
    pub fn with_input<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut stdin = StdinLines::default();
        for line in lines {
            stdin.push(line.as_ref());
        }
        self.stdin = stdin.bytes;
        self
    }

    /// Bytes of code plus stdin, the quantity `--max-input` limits.
    pub fn size(&self) -> usize {
        self.code.len() + self.stdin.len()
    }

    /// Refuses a request over `max_input_bytes`, without copying anything.
    pub fn check_size(&self, max_input_bytes: usize) -> Result<(), SandboxError> {
        let size = self.size();
        if size > max_input_bytes {
            return Err(SandboxError::RequestTooLarge {
                size,
                limit: max_input_bytes,
            });
        }
        Ok(())
    }

    /// The bytes to write to the container's stdin, or an error if the request is too large.
    /// `token` (no whitespace) comes back in the runner's end-of-program trailer.
    /// `files_budget` is how many bytes of files the runner may hand back (0: none).
    pub fn encode(
        &self,
        max_input_bytes: usize,
        token: &str,
        files_budget: usize,
    ) -> Result<Vec<u8>, SandboxError> {
        self.check_size(max_input_bytes)?;
        Ok(self.framed(&call_header(self.code.len(), token, files_budget)))
    }

    /// `header`, the code, then stdin.
    fn framed(&self, header: &str) -> Vec<u8> {
        frame(header, self.code.as_bytes(), &self.stdin)
    }

    /// The bytes for one call in a session's runner: the header also carries the stdin's
    /// length (the stream stays open for the next call) and the call's timeout, which the
    /// runner enforces by interrupting the call.
    pub fn encode_session(
        &self,
        max_input_bytes: usize,
        token: &str,
        files_budget: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, SandboxError> {
        self.check_size(max_input_bytes)?;
        Ok(self.framed(&session_header(
            self.code.len(),
            token,
            files_budget,
            self.stdin.len(),
            timeout,
        )))
    }
}

/// Stdin built a line at a time (each line and its newline appended to one buffer), counting
/// the lines: what `inputData` is read into, so no `Vec<String>` of it ever exists.
#[derive(Debug, Default)]
pub struct StdinLines {
    /// The lines so far, each ended by a newline.
    pub bytes: Vec<u8>,
    /// How many lines.
    pub lines: usize,
}

impl StdinLines {
    /// Appends one line and its newline.
    pub fn push(&mut self, line: &str) {
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
        self.lines += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_length_code_then_stdin_lines() {
        let request = ExecutionRequest::new("print(input())").with_input(["a", "b"]);
        let payload = request.encode(1 << 20, "t0k", 9).unwrap();
        assert_eq!(payload, b"14 t0k 9\nprint(input())a\nb\n");
    }

    #[test]
    fn no_input_means_empty_stdin() {
        let payload = ExecutionRequest::new("x = 1").encode(100, "t", 0).unwrap();
        assert_eq!(payload, b"5 t 0\nx = 1");
    }

    #[test]
    fn length_counts_bytes_not_characters() {
        let payload = ExecutionRequest::new("'é'").encode(100, "t", 0).unwrap();
        assert!(payload.starts_with(b"4 t 0\n"));
    }

    #[test]
    fn a_session_call_frames_its_stdin_by_length_and_carries_its_timeout() {
        let request = ExecutionRequest::new("print(input())").with_input(["a", "b"]);
        let payload = request
            .encode_session(1 << 20, "t0k", 9, std::time::Duration::from_secs(30))
            .unwrap();
        assert_eq!(payload, b"14 t0k 9 4 30000\nprint(input())a\nb\n");
        let error = request
            .encode_session(10, "t", 0, std::time::Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(error, SandboxError::RequestTooLarge { .. }));
    }

    #[test]
    fn oversized_request_is_refused_with_sizes() {
        let request = ExecutionRequest::new("x".repeat(50)).with_input(["y".repeat(60)]);
        let error = request.encode(100, "t", 0).unwrap_err();
        assert!(matches!(
            error,
            SandboxError::RequestTooLarge {
                size: 111,
                limit: 100
            }
        ));
        assert!(error.to_string().contains("PYEXEC_MAX_INPUT"));
    }
}
