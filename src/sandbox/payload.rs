//! What goes into a container's stdin: the code and the program's own input, framed for the
//! runner (`runner.py`), and the size check that refuses an oversized request before Docker
//! is ever called.
//!
//! The rootfs is read-only, so code cannot be uploaded as a file; the runner reads a line with
//! the code's length and the call's token, then the code, and leaves the rest of stdin to the
//! program. [`Trailer`] finds the runner's end-of-program mark in each output stream.

use super::SandboxError;

/// The Python program every container starts with `python3 -u -c`.
pub const RUNNER: &str = include_str!("runner.py");

/// One call's code and stdin lines, as the MCP tool received them.
#[derive(Debug, Clone, Default)]
pub struct ExecutionRequest {
    /// Python source to run as `__main__`.
    pub code: String,
    /// Lines given to the program as stdin, each ended by a newline, then EOF.
    pub input_lines: Vec<String>,
}

impl ExecutionRequest {
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            input_lines: Vec::new(),
        }
    }

    pub fn with_input<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.input_lines = lines.into_iter().map(Into::into).collect();
        self
    }

    /// Bytes of code plus stdin, the quantity `--max-input` limits.
    pub fn size(&self) -> usize {
        self.code.len() + self.input_lines.iter().map(|l| l.len() + 1).sum::<usize>()
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
    pub fn encode(&self, max_input_bytes: usize, token: &str) -> Result<Vec<u8>, SandboxError> {
        self.check_size(max_input_bytes)?;
        let size = self.size();
        let header = format!("{} {token}\n", self.code.len());
        let mut payload = Vec::with_capacity(header.len() + size);
        payload.extend_from_slice(header.as_bytes());
        payload.extend_from_slice(self.code.as_bytes());
        for line in &self.input_lines {
            payload.extend_from_slice(line.as_bytes());
            payload.push(b'\n');
        }
        Ok(payload)
    }
}

/// Finds the runner's trailer, `NUL "pyexec-exit <token> <status>" LF`, at the end of one
/// output stream, holding back the few bytes that could be its start so it never reaches the
/// output. Once the trailer is seen, whatever else arrives on the stream (a background process
/// outliving the program) is dropped: the call is over.
#[derive(Debug)]
pub struct Trailer {
    /// `NUL "pyexec-exit <token> "`.
    prefix: Vec<u8>,
    /// Bytes not yet passed on: they might be the start of the trailer.
    held: Vec<u8>,
    /// The program's exit status, once the trailer has been seen.
    status: Option<i64>,
}

/// Longest status text after the prefix, newline included ("255\n").
const STATUS_MAX: usize = 4;

impl Trailer {
    pub fn new(token: &str) -> Self {
        let mut prefix = b"\0pyexec-exit ".to_vec();
        prefix.extend_from_slice(token.as_bytes());
        prefix.push(b' ');
        Self {
            prefix,
            held: Vec::new(),
            status: None,
        }
    }

    /// The exit status the trailer carried, once seen.
    pub fn status(&self) -> Option<i64> {
        self.status
    }

    /// Takes a chunk of the stream; passes on to `out` what is certainly program output.
    pub fn push(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8])) {
        if self.status.is_some() {
            return;
        }
        self.held.extend_from_slice(chunk);
        if let Some(at) = find(&self.held, &self.prefix) {
            let rest = &self.held[at + self.prefix.len()..];
            if let Some(end) = rest.iter().position(|&b| b == b'\n') {
                if let Some(status) = std::str::from_utf8(&rest[..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    out(&self.held[..at]);
                    self.held = Vec::new();
                    self.status = Some(status);
                    return;
                }
            } else if rest.len() < STATUS_MAX {
                // The trailer's end has not arrived yet: pass on what precedes it.
                out(&self.held[..at]);
                self.held.drain(..at);
                return;
            }
        }
        let keep = self.prefix.len() + STATUS_MAX;
        if self.held.len() > keep {
            let pass = self.held.len() - keep;
            out(&self.held[..pass]);
            self.held.drain(..pass);
        }
    }

    /// The stream ended: passes on whatever was held back.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.status.is_none() {
            out(&self.held);
        }
        self.held.clear();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_length_code_then_stdin_lines() {
        let request = ExecutionRequest::new("print(input())").with_input(["a", "b"]);
        let payload = request.encode(1 << 20, "t0k").unwrap();
        assert_eq!(payload, b"14 t0k\nprint(input())a\nb\n");
    }

    #[test]
    fn no_input_means_empty_stdin() {
        let payload = ExecutionRequest::new("x = 1").encode(100, "t").unwrap();
        assert_eq!(payload, b"5 t\nx = 1");
    }

    #[test]
    fn length_counts_bytes_not_characters() {
        let payload = ExecutionRequest::new("'é'").encode(100, "t").unwrap();
        assert!(payload.starts_with(b"4 t\n"));
    }

    fn through(trailer: &mut Trailer, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            trailer.push(chunk, &mut |b| out.extend_from_slice(b));
        }
        trailer.finish(&mut |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn the_trailer_is_found_across_chunks_and_never_shown() {
        let mut trailer = Trailer::new("abc");
        let out = through(
            &mut trailer,
            &[b"hello\n\0pyexec-ex", b"it abc 3", b"\nlate"],
        );
        assert_eq!(out, b"hello\n");
        assert_eq!(trailer.status(), Some(3));
    }

    #[test]
    fn a_stream_without_trailer_is_passed_on_whole() {
        let mut trailer = Trailer::new("abc");
        let long = vec![b'x'; 1000];
        let out = through(&mut trailer, &[&long, b"\0pyexec-exit wrong 0\n", b"end"]);
        let mut expected = long.clone();
        expected.extend_from_slice(b"\0pyexec-exit wrong 0\nend");
        assert_eq!(out, expected);
        assert_eq!(trailer.status(), None);
    }

    #[test]
    fn oversized_request_is_refused_with_sizes() {
        let request = ExecutionRequest::new("x".repeat(50)).with_input(["y".repeat(60)]);
        let error = request.encode(100, "t").unwrap_err();
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
