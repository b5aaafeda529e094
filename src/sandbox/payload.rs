//! What goes into a container's stdin: the code and the program's own input, framed for the
//! runner (`runner.py`), and the size check that refuses an oversized request before Docker
//! is ever called.
//!
//! The rootfs is read-only, so code cannot be uploaded as a file; the runner reads a line with
//! the code's length, then the code, and leaves the rest of stdin to the program.

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

    /// The bytes to write to the container's stdin, or an error if the request is too large.
    pub fn encode(&self, max_input_bytes: usize) -> Result<Vec<u8>, SandboxError> {
        let size = self.size();
        if size > max_input_bytes {
            return Err(SandboxError::RequestTooLarge {
                size,
                limit: max_input_bytes,
            });
        }
        let header = format!("{}\n", self.code.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_length_code_then_stdin_lines() {
        let request = ExecutionRequest::new("print(input())").with_input(["a", "b"]);
        let payload = request.encode(1 << 20).unwrap();
        assert_eq!(payload, b"14\nprint(input())a\nb\n");
    }

    #[test]
    fn no_input_means_empty_stdin() {
        let payload = ExecutionRequest::new("x = 1").encode(100).unwrap();
        assert_eq!(payload, b"5\nx = 1");
    }

    #[test]
    fn length_counts_bytes_not_characters() {
        let payload = ExecutionRequest::new("'é'").encode(100).unwrap();
        assert!(payload.starts_with(b"4\n"));
    }

    #[test]
    fn oversized_request_is_refused_with_sizes() {
        let request = ExecutionRequest::new("x".repeat(50)).with_input(["y".repeat(60)]);
        let error = request.encode(100).unwrap_err();
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
