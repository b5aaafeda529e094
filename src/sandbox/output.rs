//! Output capture with a hard cap, and output sized for an answer: the server's memory stays
//! flat however much a program prints, the end of the output (the traceback) always survives,
//! and what is shown is always valid text.
//!
//! A [`CappedBuffer`] keeps the first and the last half of `cap` bytes of a stream and only
//! counts what falls between (bytes and lines). It becomes a [`Text`]: the kept head and tail
//! with one marker between them saying what was left out. [`Text::fit`] cuts a text further,
//! to an answer's budget, the same way (head and tail kept, one marker, counts added up), and
//! [`fit_both`] shares one budget between stdout and stderr.

use std::collections::VecDeque;
use std::fmt;

/// The first and last bytes of one output stream, plus counts of everything seen.
#[derive(Debug)]
pub struct CappedBuffer {
    /// The first bytes, at most `head_cap`.
    head: Vec<u8>,
    /// The last bytes after the head, at most `tail_cap`.
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    /// Every byte the stream produced, kept or not.
    total: u64,
    /// Every newline the stream produced, kept or not.
    newlines: u64,
}

impl CappedBuffer {
    /// Keeps at most `cap` bytes: the first half and the last half.
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Self {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: cap - head_cap,
            total: 0,
            newlines: 0,
        }
    }

    /// Appends a chunk, keeping only the head and the newest tail.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.newlines += count_newlines(chunk);
        let room = self.head_cap.saturating_sub(self.head.len());
        let (to_head, rest) = chunk.split_at(chunk.len().min(room));
        self.head.extend_from_slice(to_head);
        let rest = &rest[rest.len().saturating_sub(self.tail_cap)..];
        let excess = (self.tail.len() + rest.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..excess);
        self.tail.extend(rest);
    }

    /// True when some of the stream was dropped.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept bytes as text, with one marker where anything was dropped.
    pub fn into_text(self) -> Text {
        let truncated = self.truncated();
        let mut head = self.head;
        let tail: Vec<u8> = self.tail.into();
        if !truncated {
            head.extend_from_slice(&tail);
            return Text::whole(String::from_utf8_lossy(&head).into_owned());
        }
        // Cut where a line ends when there is one, and never inside a character.
        head.truncate(head_cut(&head));
        let tail = &tail[tail_cut(&tail)..];
        let kept_lines = count_newlines(&head) + count_newlines(tail);
        Text::cut(
            String::from_utf8_lossy(&head).into_owned(),
            String::from_utf8_lossy(tail).into_owned(),
            Omitted {
                bytes: self.total - (head.len() + tail.len()) as u64,
                lines: self.newlines - kept_lines,
            },
        )
    }
}

/// What was left out of the middle of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Omitted {
    pub bytes: u64,
    pub lines: u64,
}

/// A stream's text as shown: the whole of it, or its head and tail around one marker.
///
/// Reads as the shown text (`Deref<Target = str>`, `Display`, compares with strings).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text {
    /// What is shown, marker included.
    shown: String,
    /// Where the head ends and the tail starts in `shown`, and what the marker stands for.
    cut: Option<Cut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    head_end: usize,
    tail_start: usize,
    omitted: Omitted,
}

/// Room kept for the marker when a text is fitted to a budget.
const MARKER_ROOM: usize = 120;

impl Text {
    /// A text shown whole.
    pub fn whole(text: String) -> Self {
        Self {
            shown: text,
            cut: None,
        }
    }

    /// A head and a tail with what was between them left out.
    fn cut(head: String, tail: String, omitted: Omitted) -> Self {
        if omitted == Omitted::default() {
            return Self::whole(head + &tail);
        }
        let mut shown = head;
        if !shown.is_empty() && !shown.ends_with('\n') {
            shown.push('\n');
        }
        let head_end = shown.len();
        shown.push_str(&marker(omitted));
        if !tail.is_empty() {
            shown.push('\n');
        }
        let tail_start = shown.len();
        shown.push_str(&tail);
        Self {
            shown,
            cut: Some(Cut {
                head_end,
                tail_start,
                omitted,
            }),
        }
    }

    /// The shown text.
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// What was left out, if anything.
    pub fn omitted(&self) -> Option<Omitted> {
        self.cut.map(|c| c.omitted)
    }

    /// The part before the marker (all of it when nothing was left out).
    fn head(&self) -> &str {
        self.cut.map_or(&self.shown, |c| &self.shown[..c.head_end])
    }

    /// The part after the marker (all of it when nothing was left out).
    fn tail(&self) -> &str {
        self.cut
            .map_or(&self.shown, |c| &self.shown[c.tail_start..])
    }

    /// This text within `budget` bytes (about): its head and tail kept, one marker counting
    /// everything left out, this cut and any earlier one together.
    pub fn fit(&self, budget: usize) -> Text {
        if self.shown.len() <= budget {
            return self.clone();
        }
        let room = budget.saturating_sub(MARKER_ROOM);
        let (head, tail) = (self.head(), self.tail());
        // The end matters most (the traceback, the result): it gets the larger share.
        let head_len = line_prefix(head, room / 3);
        let tail_from = line_suffix(tail, room - head_len);
        let mut omitted = self.omitted().unwrap_or_default();
        let dropped: Vec<&str> = match self.cut {
            // One text: the middle between the kept head and the kept tail.
            None => vec![&head[head_len..tail_from.max(head_len)]],
            Some(_) => vec![&head[head_len..], &tail[..tail_from]],
        };
        for part in dropped {
            omitted.bytes += part.len() as u64;
            omitted.lines += count_newlines(part.as_bytes());
        }
        let tail_from = if self.cut.is_none() {
            tail_from.max(head_len)
        } else {
            tail_from
        };
        Text::cut(
            head[..head_len].to_string(),
            tail[tail_from..].to_string(),
            omitted,
        )
    }
}

/// Shares `budget` bytes between two texts: each gets what it needs up to half, and what one
/// leaves unused goes to the other.
pub fn fit_both(a: &Text, b: &Text, budget: usize) -> (Text, Text) {
    let half = budget / 2;
    let (a_len, b_len) = (a.len(), b.len());
    let a_budget = if b_len < half { budget - b_len } else { half };
    let b_budget = budget.saturating_sub(a_len.min(a_budget));
    (a.fit(a_budget), b.fit(b_budget))
}

/// The marker: what was left out, in lines and bytes.
fn marker(omitted: Omitted) -> String {
    let lines = match omitted.lines {
        0 => String::new(),
        1 => "1 line, ".to_string(),
        n => format!("{n} lines, "),
    };
    format!(
        "[... {lines}{} bytes of output left out here; the start and the end are shown ...]",
        omitted.bytes
    )
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.shown == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.shown == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        &self.shown == other
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown)
    }
}

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "String".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Where to end a head that was cut: after its last newline, else before a character the cut
/// split.
fn head_cut(bytes: &[u8]) -> usize {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(at) => at + 1,
        None => complete_prefix_len(bytes),
    }
}

/// Where to start a tail that was cut: after its first newline (the line's start is gone),
/// else after the continuation bytes of a character the cut split.
fn tail_cut(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(at) if at + 1 < bytes.len() => at + 1,
        _ => bytes.iter().take_while(|&&b| b & 0xc0 == 0x80).count(),
    }
}

/// The longest prefix of `text` within `max` bytes, ending at a line's end when one is there.
fn line_prefix(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].rfind('\n').map_or(end, |at| at + 1)
}

/// Where the longest suffix of `text` within `max` bytes starts, at a line's start when one
/// is there.
fn line_suffix(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match text[start..].find('\n') {
        Some(at) if start + at + 1 < text.len() => start + at + 1,
        _ => start,
    }
}

/// Length of `bytes` without a trailing, incomplete UTF-8 sequence (one a cut split in two).
pub fn complete_prefix_len(bytes: &[u8]) -> usize {
    // A UTF-8 sequence is at most 4 bytes, so only the last 3 can start a cut one.
    let start = bytes.len().saturating_sub(3);
    for i in (start..bytes.len()).rev() {
        let byte = bytes[i];
        let width = match byte {
            0x00..=0x7f => return bytes.len(),
            0x80..=0xbf => continue, // continuation byte: look further back
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        return if bytes.len() - i < width {
            i
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(range: std::ops::Range<usize>) -> String {
        range.map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut buffer = CappedBuffer::new(100);
        buffer.push(b"hello ");
        buffer.push(b"world\n");
        assert!(!buffer.truncated());
        let text = buffer.into_text();
        assert_eq!(text, "hello world\n");
        assert_eq!(text.omitted(), None);
    }

    #[test]
    fn the_head_and_the_tail_survive_with_exact_counts_between() {
        let mut buffer = CappedBuffer::new(200);
        for chunk in lines(0..1000).as_bytes().chunks(7) {
            buffer.push(chunk);
        }
        let all = lines(0..1000);
        let text = buffer.into_text();
        assert!(text.starts_with("line 0\nline 1\n"), "{text}");
        assert!(text.ends_with("line 998\nline 999\n"), "{text}");
        let omitted = text.omitted().unwrap();
        let head = text.head();
        let tail = text.tail();
        assert!(all.starts_with(head) && all.ends_with(tail));
        assert_eq!(
            omitted.bytes as usize,
            all.len() - head.len() - tail.len(),
            "{text}"
        );
        assert_eq!(
            omitted.lines as usize,
            1000 - head.lines().count() - tail.lines().count()
        );
        assert!(text.contains(&format!(
            "[... {} lines, {} bytes of",
            omitted.lines, omitted.bytes
        )));
    }

    #[test]
    fn memory_stays_at_the_cap() {
        let mut buffer = CappedBuffer::new(1024);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            buffer.push(&chunk);
        }
        assert_eq!(buffer.head.len() + buffer.tail.len(), 1024);
        assert_eq!(buffer.total, 100 * 64 * 1024);
    }

    #[test]
    fn a_character_cut_by_the_cap_is_dropped_whole() {
        // "é" is 2 bytes, "€" is 3: the head cut after the first byte of each.
        let mut buffer = CappedBuffer::new(4);
        buffer.push("aé".as_bytes());
        buffer.push(b"zzzzzz");
        assert!(buffer.into_text().starts_with("a\n[..."));
        let mut buffer = CappedBuffer::new(6);
        buffer.push("a€".as_bytes());
        buffer.push(b"zzzzzz");
        assert!(buffer.into_text().starts_with("a\n[..."));
        // The tail cut inside "€": its continuation bytes go.
        let mut buffer = CappedBuffer::new(6);
        buffer.push(b"abc");
        buffer.push("zz€xy".as_bytes());
        assert!(buffer.into_text().ends_with("...]\nxy"));
    }

    #[test]
    fn invalid_utf8_and_nul_survive_as_text() {
        let mut buffer = CappedBuffer::new(100);
        buffer.push(b"ok\xff\xfe\x00end");
        assert_eq!(buffer.into_text(), "ok\u{fffd}\u{fffd}\0end");
    }

    #[test]
    fn fitting_keeps_both_ends_and_adds_up_one_marker() {
        let mut buffer = CappedBuffer::new(20_000);
        let all = lines(0..100_000);
        buffer.push(all.as_bytes());
        let captured = buffer.into_text();
        let fitted = captured.fit(2_000);
        assert!(fitted.len() <= 2_000, "{}", fitted.len());
        assert!(fitted.starts_with("line 0\n"));
        assert!(fitted.ends_with("line 99999\n"));
        assert_eq!(fitted.matches("[... ").count(), 1, "{fitted}");
        let omitted = fitted.omitted().unwrap();
        assert_eq!(
            omitted.bytes as usize,
            all.len() - fitted.head().len() - fitted.tail().len()
        );
        assert_eq!(
            omitted.lines as usize,
            100_000 - fitted.head().lines().count() - fitted.tail().lines().count()
        );
        // A text that fits is left as it is.
        assert_eq!(captured.fit(usize::MAX), captured);
    }

    #[test]
    fn fitting_a_whole_text_keeps_head_and_tail() {
        let all = lines(0..1000);
        let fitted = Text::whole(all.clone()).fit(500);
        assert!(fitted.len() <= 500);
        assert!(fitted.starts_with("line 0\n") && fitted.ends_with("line 999\n"));
        let omitted = fitted.omitted().unwrap();
        assert_eq!(
            omitted.bytes as usize,
            all.len() - fitted.head().len() - fitted.tail().len()
        );
    }

    #[test]
    fn one_budget_is_shared_so_that_a_small_stream_is_kept_whole() {
        let big = Text::whole(lines(0..10_000));
        let small = Text::whole("Traceback (most recent call last):\nValueError: x\n".into());
        let (a, b) = fit_both(&big, &small, 4_000);
        assert_eq!(b, small);
        assert!(a.len() + b.len() <= 4_000, "{}", a.len() + b.len());
        assert!(a.len() > 3_000, "the unused share goes to the big stream");
        let (a, b) = fit_both(&big, &big, 4_000);
        assert!(a.len() <= 2_000 && b.len() <= 2_000);
        let (a, b) = fit_both(&small, &small, 4_000);
        assert_eq!((a, b), (small.clone(), small));
    }
}
