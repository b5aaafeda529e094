//! Output capture with a hard cap: the server's memory stays flat however much a program
//! prints, and what is shown is always valid text.
//!
//! A [`CappedBuffer`] keeps the first `cap` bytes of a stream and only counts the rest. When it
//! is turned into text, invalid UTF-8 becomes U+FFFD, a multibyte character cut by the cap is
//! dropped whole, and a marker says how much was not shown.

/// The first `cap` bytes of one output stream, plus a count of everything seen.
#[derive(Debug)]
pub struct CappedBuffer {
    /// Bytes kept, at most `cap`.
    kept: Vec<u8>,
    /// Largest number of bytes kept.
    cap: usize,
    /// Every byte the stream produced, kept or not.
    total: u64,
}

impl CappedBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            cap,
            total: 0,
        }
    }

    /// Appends a chunk, keeping only what fits under the cap.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// True when some of the stream was dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// The kept bytes as text, with a truncation marker when anything was dropped.
    pub fn into_text(self) -> String {
        let truncated = self.truncated();
        let mut kept = self.kept;
        if truncated {
            kept.truncate(complete_prefix_len(&kept));
        }
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if truncated {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "[output truncated: showing the first {} of {} bytes]",
                kept.len(),
                self.total
            ));
        }
        text
    }
}

/// Length of `bytes` without a trailing, incomplete UTF-8 sequence (one the cap cut in two).
fn complete_prefix_len(bytes: &[u8]) -> usize {
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

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut buffer = CappedBuffer::new(100);
        buffer.push(b"hello ");
        buffer.push(b"world\n");
        assert!(!buffer.truncated());
        assert_eq!(buffer.into_text(), "hello world\n");
    }

    #[test]
    fn truncation_is_marked_with_both_sizes() {
        let mut buffer = CappedBuffer::new(4);
        buffer.push(b"abcdefgh");
        buffer.push(b"ij");
        assert!(buffer.truncated());
        assert_eq!(
            buffer.into_text(),
            "abcd\n[output truncated: showing the first 4 of 10 bytes]"
        );
    }

    #[test]
    fn memory_stays_at_the_cap() {
        let mut buffer = CappedBuffer::new(1024);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            buffer.push(&chunk);
        }
        assert_eq!(buffer.kept.len(), 1024);
        assert_eq!(buffer.total, 100 * 64 * 1024);
    }

    #[test]
    fn a_character_cut_by_the_cap_is_dropped_whole() {
        // "é" is 2 bytes, "€" is 3: cut each after its first byte.
        let mut buffer = CappedBuffer::new(2);
        buffer.push("aé".as_bytes());
        assert_eq!(buffer.into_text().lines().next(), Some("a"));
        let mut buffer = CappedBuffer::new(3);
        buffer.push("a€".as_bytes());
        assert_eq!(buffer.into_text().lines().next(), Some("a"));
        let mut buffer = CappedBuffer::new(4);
        buffer.push("a€b".as_bytes());
        assert_eq!(buffer.into_text().lines().next(), Some("a€"));
    }

    #[test]
    fn invalid_utf8_and_nul_survive_as_text() {
        let mut buffer = CappedBuffer::new(100);
        buffer.push(b"ok\xff\xfe\x00end");
        assert_eq!(buffer.into_text(), "ok\u{fffd}\u{fffd}\0end");
    }
}
