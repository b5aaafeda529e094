//! Hints: the next step an error suggests, carried as data. A message of ours says what
//! failed, then each hint on a line of its own starting `hint: ` (so a model reading a tool
//! answer sees it too); [`Hinted`] is that message as two parts, and [`Report`] turns an
//! error's chain into what the command line prints: every cause once, then every hint once.
//! A leaf: anything may use it, it uses nothing of ours.

/// What starts a hint's line in a message.
pub const MARK: &str = "hint: ";

/// A message as what failed and the next steps it suggests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hinted {
    /// What failed, without its hints (may span lines).
    pub reason: String,
    /// Each next step, in order, without the mark.
    pub hints: Vec<String>,
}

impl Hinted {
    /// Splits a message into its reason and its hint lines.
    pub fn parse(text: &str) -> Self {
        let mut reason = Vec::new();
        let mut hints = Vec::new();
        for line in text.lines() {
            match line.strip_prefix(MARK) {
                Some(hint) => hints.push(hint.to_string()),
                None => reason.push(line),
            }
        }
        Self {
            reason: reason.join("\n"),
            hints,
        }
    }
}

impl std::fmt::Display for Hinted {
    /// The message as it travels: the reason, then each hint on its own line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        for hint in &self.hints {
            write!(f, "\n{MARK}{hint}")?;
        }
        Ok(())
    }
}

/// An error chain as printed once: its causes joined, each said once, and its hints, each
/// said once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The causes still worth saying, outermost first.
    pub causes: Vec<String>,
    /// Every distinct hint of the chain, in the order met.
    pub hints: Vec<String>,
}

impl Report {
    /// Builds the report from a chain's messages, outermost first. A cause is left out only
    /// when it is already said: an earlier message ends with it (the `"{context}: {source}"`
    /// shape, which repeats its source) or holds it in parentheses (`"… ({source})"`), or the
    /// same of its detail after a label such as Docker's "status code 500: ". A cause whose
    /// text merely appears inside an earlier one is kept.
    pub fn of<I: IntoIterator<Item = S>, S: AsRef<str>>(chain: I) -> Self {
        let mut report = Self::default();
        let mut earlier: Vec<String> = Vec::new();
        for message in chain {
            let Hinted { reason, hints } = Hinted::parse(message.as_ref());
            for hint in hints {
                if !report.hints.contains(&hint) {
                    report.hints.push(hint);
                }
            }
            let said = |part: &str| {
                let quoted = format!("({part})");
                earlier
                    .iter()
                    .any(|e| e.ends_with(part) || e.contains(&quoted))
            };
            let detail = reason.split_once(": ").map(|(_, detail)| detail);
            if !reason.is_empty() && !said(&reason) && !detail.is_some_and(said) {
                report.causes.push(reason.clone());
            }
            earlier.push(reason);
        }
        report
    }

    /// An `anyhow` error's chain.
    pub fn of_error(error: &anyhow::Error) -> Self {
        Self::of(error.chain().map(|cause| cause.to_string()))
    }
}

impl std::fmt::Display for Report {
    /// `error: <causes joined by ": ">`, then a `hint: ` line per hint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error: {}", self.causes.join(": "))?;
        for hint in &self.hints {
            write!(f, "\n{MARK}{hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_into_its_reason_and_hints_and_back() {
        let text = "image x not found\nhint: build it\nhint: or pull it";
        let hinted = Hinted::parse(text);
        assert_eq!(hinted.reason, "image x not found");
        assert_eq!(hinted.hints, ["build it", "or pull it"]);
        assert_eq!(hinted.to_string(), text);
    }

    #[test]
    fn a_cause_repeated_by_its_context_is_said_once() {
        let report = Report::of([
            "could not start the container: image x not found\nhint: build it",
            "image x not found\nhint: build it",
        ]);
        assert_eq!(
            report.causes,
            ["could not start the container: image x not found"]
        );
        assert_eq!(report.hints, ["build it"], "each hint once");
        let docker = Report::of([
            "cannot create the container: no space left",
            "Docker responded with status code 500: no space left",
        ]);
        assert_eq!(
            docker.causes,
            ["cannot create the container: no space left"]
        );
    }

    #[test]
    fn a_cause_whose_text_is_inside_an_earlier_one_is_still_said() {
        // The old printer dropped "timeout": an earlier message contained the word.
        let report = Report::of(["install failed: pip timeout exceeded after 300s", "timeout"]);
        assert_eq!(
            report.to_string(),
            "error: install failed: pip timeout exceeded after 300s: timeout"
        );
    }

    #[test]
    fn an_error_prints_its_chain_once_and_each_hint_once() {
        let error = anyhow::anyhow!("no space left\nhint: prune images")
            .context("cannot commit the layer\nhint: prune images")
            .context("install failed");
        assert_eq!(
            Report::of_error(&error).to_string(),
            "error: install failed: cannot commit the layer: no space left\nhint: prune images"
        );
    }
}
