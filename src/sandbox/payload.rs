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
        Ok(self.framed(&format!("{} {token} {files_budget}\n", self.code.len())))
    }

    /// `header`, the code, then stdin.
    fn framed(&self, header: &str) -> Vec<u8> {
        let mut payload = Vec::with_capacity(header.len() + self.size());
        payload.extend_from_slice(header.as_bytes());
        payload.extend_from_slice(self.code.as_bytes());
        payload.extend_from_slice(&self.stdin);
        payload
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
        Ok(self.framed(&format!(
            "{} {token} {files_budget} {} {}\n",
            self.code.len(),
            self.stdin.len(),
            timeout.as_millis()
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

/// Finds the runner's trailer, `NUL "pyexec-exit <token> <status>[ <length>[ oom]]" LF`, at the end
/// of one output stream, holding back the few bytes that could be its start so it never
/// reaches the output; with a length, the bundle of returned files that follows it is
/// collected too (up to a cap; a larger one is refused, not read). Once the trailer (and its
/// bundle) is in, whatever else arrives on the stream (a background process outliving the
/// program) is dropped: the call is over.
#[derive(Debug)]
pub struct Trailer {
    /// `NUL "pyexec-exit <token> "`.
    prefix: Vec<u8>,
    /// Bytes not yet passed on: they might be the start of the trailer.
    held: Vec<u8>,
    /// The status line, once seen.
    line: Option<StatusLine>,
    /// The bundle so far.
    bundle: Vec<u8>,
    /// Largest bundle accepted.
    max_bundle: usize,
}

/// What came after the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bundle {
    /// No files were returned (or none were asked for).
    None,
    /// The runner's bundle, whole.
    Whole(Vec<u8>),
    /// The runner declared more than the cap: not read.
    Refused(usize),
}

/// What the runner's status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusLine {
    status: i64,
    /// The declared length of the bundle that follows.
    length: usize,
    /// The container's memory cgroup counted an OOM kill (said only for a SIGKILLed child).
    oom: bool,
    /// A session's call was interrupted at its timeout (or on cancel).
    interrupted: bool,
    /// A session's interpreter is gone, and with it the session.
    ended: bool,
}

/// Longest status line after the prefix, newline included ("255 " + 20 digits +
/// " timeout ended oom\n").
const STATUS_MAX: usize = 44;

impl Trailer {
    /// A trailer finder for `token`, accepting a bundle of at most `max_bundle` bytes.
    pub fn new(token: &str, max_bundle: usize) -> Self {
        let mut prefix = b"\0pyexec-exit ".to_vec();
        prefix.extend_from_slice(token.as_bytes());
        prefix.push(b' ');
        Self {
            prefix,
            held: Vec::new(),
            line: None,
            bundle: Vec::new(),
            max_bundle,
        }
    }

    /// The exit status the trailer carried, once it and its bundle are in.
    pub fn status(&self) -> Option<i64> {
        let StatusLine { status, length, .. } = self.line?;
        (length > self.max_bundle || self.bundle.len() >= length).then_some(status)
    }

    /// Whether the runner saw the OOM killer strike in the container (once the status is in).
    pub fn oom(&self) -> bool {
        self.line.is_some_and(|line| line.oom)
    }

    /// Whether a session's runner interrupted the call at its timeout.
    pub fn interrupted(&self) -> bool {
        self.line.is_some_and(|line| line.interrupted)
    }

    /// Whether a session's interpreter ended with this call (and the session with it).
    pub fn ended(&self) -> bool {
        self.line.is_some_and(|line| line.ended)
    }

    /// The bundle that followed the trailer (call once the status is known).
    pub fn take_bundle(&mut self) -> Bundle {
        match self.line {
            Some(StatusLine { length, .. }) if length > self.max_bundle => Bundle::Refused(length),
            Some(StatusLine { length, .. }) if length > 0 && self.bundle.len() == length => {
                Bundle::Whole(std::mem::take(&mut self.bundle))
            }
            _ => Bundle::None,
        }
    }

    /// Takes a chunk of the stream; passes on to `out` what is certainly program output.
    pub fn push(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8])) {
        if let Some(StatusLine { length, .. }) = self.line {
            if length <= self.max_bundle {
                let room = length - self.bundle.len().min(length);
                self.bundle
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            return;
        }
        self.held.extend_from_slice(chunk);
        if let Some(at) = find(&self.held, &self.prefix) {
            let rest = &self.held[at + self.prefix.len()..];
            if let Some(end) = rest.iter().position(|&b| b == b'\n') {
                if let Some(line) = parse_line(&rest[..end]) {
                    out(&self.held[..at]);
                    let after = at + self.prefix.len() + end + 1;
                    let held = std::mem::take(&mut self.held);
                    self.line = Some(line);
                    self.push(&held[after..], out);
                    return;
                }
            } else if rest.len() < STATUS_MAX {
                // The trailer's end has not arrived yet: pass on what precedes it.
                out(&self.held[..at]);
                self.held.drain(..at);
                return;
            }
        }
        // Only bytes from a NUL on can be the trailer's start: everything before the last NUL
        // (or all of it, when what follows that NUL cannot begin the trailer) is output now,
        // so a program's output is never held back waiting for more.
        let pass = match self.held.iter().rposition(|&b| b == 0) {
            Some(at) if self.prefix.starts_with(&self.held[at..]) => at,
            _ => self.held.len(),
        };
        out(&self.held[..pass]);
        self.held.drain(..pass);
    }

    /// The stream ended: passes on whatever was held back.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.line.is_none() {
            out(&self.held);
        }
        self.held.clear();
    }
}

/// `<status>`, `<status> <length>`, or `<status> <length>` followed by flags, each at most
/// once: `oom`, and in a session `timeout` and `ended`.
fn parse_line(line: &[u8]) -> Option<StatusLine> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split(' ');
    let status = fields.next()?.parse().ok()?;
    let length = match fields.next() {
        Some(length) => length.parse().ok()?,
        None => 0,
    };
    let mut parsed = StatusLine {
        status,
        length,
        oom: false,
        interrupted: false,
        ended: false,
    };
    for flag in fields {
        let seen = match flag {
            "oom" => &mut parsed.oom,
            "timeout" => &mut parsed.interrupted,
            "ended" => &mut parsed.ended,
            _ => return None,
        };
        if std::mem::replace(seen, true) {
            return None;
        }
    }
    Some(parsed)
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
        let mut trailer = Trailer::new("abc", 0);
        let out = through(
            &mut trailer,
            &[b"hello\n\0pyexec-ex", b"it abc 3", b"\nlate"],
        );
        assert_eq!(out, b"hello\n");
        assert_eq!(trailer.status(), Some(3));
    }

    #[test]
    fn a_bundle_after_the_trailer_is_collected_and_never_shown() {
        let mut trailer = Trailer::new("abc", 100);
        let out = through(
            &mut trailer,
            &[b"hi\n\0pyexec-exit abc 0 1", b"0\n0123", b"456789late"],
        );
        assert_eq!(out, b"hi\n");
        assert_eq!(trailer.status(), Some(0));
        assert_eq!(trailer.take_bundle(), Bundle::Whole(b"0123456789".to_vec()));
        // The status waits for the whole bundle.
        let mut trailer = Trailer::new("abc", 100);
        through(&mut trailer, &[b"\0pyexec-exit abc 1 10\n0123"]);
        assert_eq!(trailer.status(), None);
        // A declared length over the cap is refused without being read.
        let mut trailer = Trailer::new("abc", 5);
        through(&mut trailer, &[b"\0pyexec-exit abc 0 10\n0123"]);
        assert_eq!(trailer.status(), Some(0));
        assert_eq!(trailer.take_bundle(), Bundle::Refused(10));
        // No length, or zero: no bundle.
        let mut trailer = Trailer::new("abc", 5);
        through(&mut trailer, &[b"\0pyexec-exit abc 0 0\nx"]);
        assert_eq!(
            (trailer.status(), trailer.take_bundle()),
            (Some(0), Bundle::None)
        );
    }

    #[test]
    fn an_oom_mark_after_the_length_is_read_and_anything_else_there_is_no_trailer() {
        let mut trailer = Trailer::new("abc", 10);
        let out = through(&mut trailer, &[b"start\n\0pyexec-exit abc 137 0 oom\n"]);
        assert_eq!(out, b"start\n");
        assert_eq!((trailer.status(), trailer.oom()), (Some(137), true));
        let mut trailer = Trailer::new("abc", 10);
        through(&mut trailer, &[b"\0pyexec-exit abc 137 0\n"]);
        assert_eq!((trailer.status(), trailer.oom()), (Some(137), false));
        let mut trailer = Trailer::new("abc", 10);
        through(&mut trailer, &[b"\0pyexec-exit abc 137 0 ok\n"]);
        assert_eq!(trailer.status(), None);
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
    fn session_flags_are_read_once_each_and_nothing_else_is_a_trailer() {
        let mut trailer = Trailer::new("abc", 10);
        through(
            &mut trailer,
            &[b"\0pyexec-exit abc 137 0 timeout ended oom\n"],
        );
        assert_eq!(trailer.status(), Some(137));
        assert!(trailer.interrupted() && trailer.ended() && trailer.oom());
        let mut trailer = Trailer::new("abc", 10);
        through(&mut trailer, &[b"\0pyexec-exit abc 130 0 timeout\n"]);
        assert!(trailer.interrupted() && !trailer.ended());
        for line in [
            &b"\0pyexec-exit abc 0 0 ended ended\n"[..],
            b"\0pyexec-exit abc 0 0 closed\n",
            b"\0pyexec-exit abc 0 0 \n",
        ] {
            let mut trailer = Trailer::new("abc", 10);
            through(&mut trailer, &[line]);
            assert_eq!(trailer.status(), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn output_is_passed_on_at_once_unless_it_may_be_the_trailers_start() {
        let mut trailer = Trailer::new("abc", 0);
        let mut out = Vec::new();
        trailer.push(b"tick 0\n", &mut |b| out.extend_from_slice(b));
        assert_eq!(out, b"tick 0\n", "nothing held back");
        trailer.push(b"a\0b\0pyexec", &mut |b| out.extend_from_slice(b));
        assert_eq!(out, b"tick 0\na\0b", "held: what may begin the trailer");
        trailer.push(b"-exit abd", &mut |b| out.extend_from_slice(b));
        assert_eq!(
            out, b"tick 0\na\0b\0pyexec-exit abd",
            "not the trailer after all"
        );
    }

    #[test]
    fn a_stream_without_trailer_is_passed_on_whole() {
        let mut trailer = Trailer::new("abc", 0);
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
