//! The runner's protocol: everything the server and `runner.py` must agree on, in one place.
//!
//! What goes in: the header line that frames a call's payload ([`call_header`],
//! [`session_header`]: the code's length, the call's token, the files budget, and in a session
//! the stdin's length and the timeout), then the code, then stdin ([`frame`]). What comes out:
//! each output stream ends with a trailer, `NUL "pyexec-exit <token> <status>[ <length>[
//! flags]]" LF` ([`Trailer`]), the stdout one followed by the bundle of returned files
//! ([`Bundle`], its manifest bounded by [`MANIFEST_MAX`]). And the values both sides use: the
//! status of a killed program ([`KILLED`]), the runner's "no payload" exit ([`NO_PAYLOAD`]),
//! a session's interrupt byte and grace ([`INTERRUPT`], [`INTERRUPT_GRACE`]). A unit test
//! reads `runner.py` and checks that it uses the same values.

use std::time::Duration;

/// The Python program every container starts with `python3 -u -c`.
pub const RUNNER: &str = include_str!("runner.py");

/// Exit status Docker reports for a process killed by SIGKILL (timeout, OOM killer); the
/// runner exits with it at its deadline (`_KILLED`).
pub const KILLED: i64 = 137;
/// Exit status of the runner when its stdin closes before a payload arrives (`_NO_PAYLOAD`).
pub const NO_PAYLOAD: i64 = 125;
/// How long the runner gives an interrupted call to end before it kills the interpreter
/// (`_INTERRUPT_GRACE` in runner.py).
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// The byte that asks a session's runner to interrupt the running call (`_INTERRUPT`).
pub const INTERRUPT: &[u8] = b"!";
/// Room for the manifest on top of the files' own bytes.
pub const MANIFEST_MAX: usize = 256 << 10;
/// Longest header line a session's runner reads (`_HEADER_MAX`); every header fits.
pub const HEADER_MAX: usize = 256;
/// What starts every trailer, before the call's token (`_TRAILER`).
pub const TRAILER_MARK: &[u8] = b"\0pyexec-exit ";
/// Where an execution with an egress allowlist finds the folder of its proxy's Unix socket
/// (`crate::egress::SOCKET`; `_EGRESS_SOCKET` in runner.py): the container's own folder,
/// bind-mounted from the server.
pub const EGRESS_DIR: &str = "/run/pyexec-egress";
/// The loopback port the runner relays to that socket (`_EGRESS_PORT`): the port of the
/// `HTTP_PROXY` the program is given.
pub const EGRESS_PORT: u16 = 3128;
/// The runner's argument that starts session mode (after the deadline and the two uids).
pub const SESSION_MODE: &str = "session";
/// Trailer flag: the container's memory cgroup counted an OOM kill.
const FLAG_OOM: &str = "oom";
/// Trailer flag: a session's call was interrupted at its timeout (or on cancel).
const FLAG_TIMEOUT: &str = "timeout";
/// Trailer flag: a session's interpreter is gone.
const FLAG_ENDED: &str = "ended";

/// The header of a one-call container's payload: `<code length> <token> <files budget>`.
/// `token` (no whitespace) comes back in the runner's trailers; `files_budget` is how many
/// bytes of files the runner may hand back (0: none).
pub fn call_header(code_len: usize, token: &str, files_budget: usize) -> String {
    format!("{code_len} {token} {files_budget}\n")
}

/// The header of one call in a session's runner: it also carries the stdin's length (the
/// stream stays open for the next call) and the call's timeout in milliseconds, which the
/// runner enforces by interrupting the call.
pub fn session_header(
    code_len: usize,
    token: &str,
    files_budget: usize,
    stdin_len: usize,
    timeout: Duration,
) -> String {
    let header = format!(
        "{code_len} {token} {files_budget} {stdin_len} {}\n",
        timeout.as_millis()
    );
    debug_assert!(
        header.len() <= HEADER_MAX,
        "a header the runner would refuse"
    );
    header
}

/// `header`, the code, then stdin: the bytes a container's stdin gets for one call.
pub fn frame(header: &str, code: &[u8], stdin: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(header.len() + code.len() + stdin.len());
    payload.extend_from_slice(header.as_bytes());
    payload.extend_from_slice(code);
    payload.extend_from_slice(stdin);
    payload
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
        let mut prefix = TRAILER_MARK.to_vec();
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
            FLAG_OOM => &mut parsed.oom,
            FLAG_TIMEOUT => &mut parsed.interrupted,
            FLAG_ENDED => &mut parsed.ended,
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

    /// Python's spelling of a bytes literal, as runner.py writes its constants.
    fn py_bytes(bytes: &[u8]) -> String {
        let inner: String = bytes
            .iter()
            .map(|&b| match b {
                0 => "\\0".to_string(),
                b'"' | b'\\' => format!("\\{}", b as char),
                0x20..=0x7e => (b as char).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect();
        format!("b\"{inner}\"")
    }

    /// The lines of runner.py that are code (comments left out), trimmed.
    fn runner_code() -> Vec<&'static str> {
        RUNNER
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    }

    fn runner_has(line: &str) {
        assert!(
            runner_code().contains(&line),
            "runner.py does not say `{line}`: the server and the runner disagree"
        );
    }

    #[test]
    fn the_runner_uses_the_same_values() {
        runner_has(&format!("_KILLED = {KILLED}"));
        runner_has(&format!("_NO_PAYLOAD = {NO_PAYLOAD}"));
        runner_has(&format!("_HEADER_MAX = {HEADER_MAX}"));
        runner_has(&format!("_TRAILER = {}", py_bytes(TRAILER_MARK)));
        runner_has(&format!("_INTERRUPT = {}", py_bytes(INTERRUPT)));
        runner_has(&format!(
            "_INTERRUPT_GRACE = {:?}",
            INTERRUPT_GRACE.as_secs_f64()
        ));
        runner_has(&format!(
            "_EGRESS_SOCKET = \"{EGRESS_DIR}/{}\"",
            crate::egress::SOCKET
        ));
        runner_has(&format!("_EGRESS_PORT = {EGRESS_PORT}"));
        runner_has(&format!(
            "_EGRESS_CA = \"{EGRESS_DIR}/{}\"",
            crate::egress::CA_BUNDLE
        ));
        // Spelled once, as the constant: no literal elsewhere can drift from it.
        for value in [
            KILLED.to_string(),
            NO_PAYLOAD.to_string(),
            HEADER_MAX.to_string(),
            EGRESS_PORT.to_string(),
        ] {
            let lines: Vec<_> = runner_code()
                .into_iter()
                .filter(|line| {
                    line.split(|c: char| !c.is_ascii_digit())
                        .any(|n| n == value)
                })
                .collect();
            assert_eq!(lines.len(), 1, "{value} in runner.py: {lines:?}");
        }
        let marks = runner_code()
            .into_iter()
            .filter(|line| line.contains("pyexec-exit"))
            .count();
        assert_eq!(marks, 1, "the trailer's mark is spelled once, as _TRAILER");
        runner_has(&format!(
            "if len(sys.argv) > 5 and sys.argv[4] == \"{SESSION_MODE}\":"
        ));
    }

    #[test]
    fn the_runner_reads_the_header_fields_where_the_server_writes_them() {
        let plain = call_header(3, "TOKEN", 7);
        assert_eq!(plain, "3 TOKEN 7\n", "code length, token, files budget");
        runner_has("budget = int(fields[2]) if len(fields) > 2 else 0");
        runner_has("return int(fields[0]), fields[1], budget");
        let session = session_header(3, "TOKEN", 7, 11, Duration::from_secs(4));
        assert_eq!(
            session, "3 TOKEN 7 11 4000\n",
            "code length, token, files budget, stdin length, timeout in ms"
        );
        runner_has("code_length, token, budget = int(fields[0]), fields[1], int(fields[2])");
        runner_has("input_length, timeout = int(fields[3]), int(fields[4]) / 1000.0");
        // The longest header a session may send still fits the runner's line.
        let longest = session_header(
            usize::MAX,
            &"f".repeat(32),
            usize::MAX,
            usize::MAX,
            Duration::from_secs(u64::MAX / 1000),
        );
        assert!(longest.len() <= HEADER_MAX, "{}", longest.len());
    }

    #[test]
    fn the_runner_writes_trailers_as_they_are_parsed() {
        // `<mark><token> <status>`, then ` <length><flags>` LF and the bundle on stdout, LF on
        // stderr.
        let written = "trailer = _TRAILER + token + b\" \" + str(status).encode()";
        assert_eq!(runner_code().iter().filter(|l| **l == written).count(), 2);
        runner_has(
            "for fd, tail in ((1, b\" %d%s\\n\" % (len(bundle), flags) + bundle), (2, b\"\\n\")):",
        );
        runner_has(
            "for fd, tail in ((1, b\" %d%s\\n\" % (len(bundle), oom) + bundle), (2, b\"\\n\")):",
        );
        runner_has(&format!(
            "oom = b\" {FLAG_OOM}\" if status == _KILLED and _oom_killed() else b\"\""
        ));
        for flag in [FLAG_TIMEOUT, FLAG_ENDED, FLAG_OOM] {
            runner_has(&format!("flags += b\" {flag}\""));
        }
        // The longest status line the runner writes fits what the parser waits for.
        let longest = format!("255 {} {FLAG_TIMEOUT} {FLAG_ENDED} {FLAG_OOM}\n", u64::MAX);
        assert!(longest.len() <= STATUS_MAX);
        let mut trailer = Trailer::new("t", 10);
        let mut line = TRAILER_MARK.to_vec();
        line.extend_from_slice(b"t 137 0 timeout ended oom\n");
        through(&mut trailer, &[&line]);
        assert_eq!(trailer.status(), Some(KILLED));
        assert!(trailer.interrupted() && trailer.ended() && trailer.oom());
    }
}
