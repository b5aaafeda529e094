//! Reading an install container's output: both streams split into lines for progress, the
//! last few kept for an error message, and the driver's own lines (`driver.py`: the installed
//! distributions before and after, names the index has only as source) picked out.

use std::collections::{BTreeMap, VecDeque};

use crate::sandbox::Stream;

/// The line prefix the driver prints before the installed-distributions JSON.
const MARKER: &str = "PYEXEC-INSTALLED ";
/// The line prefix the driver prints before a name the index has only as source.
const SOURCE_ONLY: &str = "PYEXEC-SOURCE-ONLY ";
/// Lines of pip output kept for an error message.
const TAIL_LINES: usize = 25;

/// Every installed distribution before and after pip ran, as the driver reports it.
#[derive(Debug, serde::Deserialize)]
pub struct DriverReport {
    pub before: BTreeMap<String, String>,
    pub after: BTreeMap<String, String>,
}

/// Splits both output streams into lines for progress, keeps the last few for errors, and
/// picks out the driver's final report.
#[derive(Default)]
pub struct LineSplitter {
    /// Unfinished line per stream.
    partial: [Vec<u8>; 2],
    /// The last lines seen, for an error message.
    pub tail: VecDeque<String>,
    /// The driver's report of installed distributions, once seen.
    pub installed: Option<DriverReport>,
    /// Requested names the index has only as source distributions (driver's report).
    pub source_only: Vec<String>,
}

impl LineSplitter {
    pub fn push(&mut self, stream: Stream, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        let index = usize::from(stream == Stream::Stderr);
        self.partial[index].extend_from_slice(bytes);
        while let Some(end) = self.partial[index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[index].drain(..=end).collect();
            self.line(&String::from_utf8_lossy(&line), emit);
        }
        // A line with no end in sight is cut, so memory stays bounded.
        if self.partial[index].len() > 64 << 10 {
            let line = std::mem::take(&mut self.partial[index]);
            self.line(&String::from_utf8_lossy(&line), emit);
        }
    }

    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        for index in 0..2 {
            let line = std::mem::take(&mut self.partial[index]);
            if !line.is_empty() {
                self.line(&String::from_utf8_lossy(&line), emit);
            }
        }
    }

    fn line(&mut self, line: &str, emit: &mut dyn FnMut(&str)) {
        let line = line.trim_end();
        if let Some(report) = line.strip_prefix(MARKER) {
            self.installed = serde_json::from_str(report).ok();
            return;
        }
        if let Some(name) = line.strip_prefix(SOURCE_ONLY) {
            if self.source_only.len() < 20 {
                self.source_only.push(name.to_string());
            }
            return;
        }
        if line.is_empty() {
            return;
        }
        emit(line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_only_reports_are_picked_out_of_the_output() {
        let mut splitter = LineSplitter::default();
        let mut seen = Vec::new();
        splitter.push(
            Stream::Stdout,
            b"ERROR: nope\n\nPYEXEC-SOURCE-ONLY docopt\n",
            &mut |l| seen.push(l.to_string()),
        );
        assert_eq!(splitter.source_only, ["docopt"]);
        assert_eq!(seen, ["ERROR: nope"]);
    }

    #[test]
    fn lines_are_split_across_chunks_and_the_report_is_picked_out() {
        let mut splitter = LineSplitter::default();
        let mut seen = Vec::new();
        let mut emit = |line: &str| seen.push(line.to_string());
        splitter.push(Stream::Stdout, b"Collecting si", &mut emit);
        splitter.push(Stream::Stdout, b"x\nInstalling\n", &mut emit);
        splitter.push(Stream::Stderr, b"WARNING: x\n", &mut emit);
        let report = br#"PYEXEC-INSTALLED {"before": {}, "after": {"six": "1.16.0"}}"#;
        splitter.push(Stream::Stdout, b"\n", &mut emit);
        splitter.push(Stream::Stdout, report, &mut emit);
        splitter.push(Stream::Stdout, b"\n", &mut emit);
        splitter.finish(&mut emit);
        assert_eq!(seen, ["Collecting six", "Installing", "WARNING: x"]);
        let report = splitter.installed.unwrap();
        assert_eq!(report.after["six"], "1.16.0");
        assert!(report.before.is_empty());
    }

    #[test]
    fn the_tail_keeps_only_the_last_lines() {
        let mut splitter = LineSplitter::default();
        for i in 0..100 {
            splitter.push(
                Stream::Stderr,
                format!("line {i}\n").as_bytes(),
                &mut |_| {},
            );
        }
        assert_eq!(splitter.tail.len(), TAIL_LINES);
        assert_eq!(splitter.tail.back().unwrap(), "line 99");
    }
}
